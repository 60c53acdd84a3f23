package crdt

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

type blk = blocks.Block

func mkBlock(t testing.TB, data string) blk {
	c, err := cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}.Sum([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid([]byte(data), c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forge makes a block that claims c but carries other bytes.
func forge(t testing.TB, c cid.Cid, data string) blk {
	b, err := blocks.NewBlockWithCid([]byte(data), c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeFetcher serves fixed blocks per machine, whatever is asked.
type fakeFetcher map[string][]blk

func (f fakeFetcher) FetchBlocks(ctx context.Context, m string, req FetchRequest) (<-chan blocks.Block, error) {
	out := make(chan blocks.Block, len(f[m]))
	for _, b := range f[m] {
		out <- b
	}
	close(out)
	return out, nil
}

func openOffline(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Dir: t.TempDir(), Name: "solo", Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
