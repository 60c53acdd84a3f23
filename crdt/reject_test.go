package crdt

import (
	"context"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/uncloud-mesh/uncloud/record"
)

// TestRejectHostileInput feeds garbage, truncated, malformed and replayed
// head broadcasts, and blocks that do not hash to their CID: all rejected
// and counted, nothing corrupted, replication still works.
func TestRejectHostileInput(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	for i := range 5 {
		mustPut(t, c.s("m2"), &record.Service{Name: "s", Mode: string(rune('a' + i))})
	}
	c.waitConverged(5 * time.Second)
	m1 := c.s("m1")
	before, _ := m1.Digest(ctx)
	valid, err := encodeHeads(c.s("m2").Heads(ctx))
	if err != nil {
		t.Fatal(err)
	}
	rawCID, _ := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum([]byte("x"))
	wrongCodec, _ := encodeHeads([]cid.Cid{rawCID})
	garbage := []struct {
		name    string
		payload []byte
	}{
		{"random bytes", []byte("\xff\xfe\x00garbage that is not protobuf")},
		{"truncated", valid[:len(valid)-7]},
		{"no heads", []byte{}},
		{"cid not a cid", []byte{0x0a, 0x05, 0x0a, 0x03, 1, 2, 3}},
		{"wrong codec", wrongCodec},
		{"unknown field", append(append([]byte{}, valid...), 0x78, 0x01)},
	}
	st0 := m1.Stats()
	for _, g := range garbage {
		c.hub.Inject("m1", "crdt", "evil", g.payload)
	}
	for range 3 { // replays of an already-processed head set
		c.hub.Inject("m1", "crdt", "m2", valid)
	}
	// The empty payload is "no heads yet", not an attack: 5 rejects.
	if !waitFor(3*time.Second, func() bool {
		st := m1.Stats()
		return st.BroadcastsRejected-st0.BroadcastsRejected == 5 && st.BroadcastsStale-st0.BroadcastsStale >= 3
	}) {
		t.Fatalf("counters: before %+v after %+v; want 5 more rejected, ≥3 more stale", st0, m1.Stats())
	}
	if after, _ := m1.Digest(ctx); after != before {
		t.Fatalf("state changed by hostile broadcasts")
	}

	// Blocks with a wrong hash: m3 goes away, m2 writes, m3 comes back
	// while every block m2 serves is corrupted in transit. m3 must reject
	// them and get the real ones from m1.
	c.stop("m3")
	for i := range 50 {
		mustPut(t, c.s("m2"), &record.Container{MachineID: "m2", ID: string(rune('a'+i%26)) + string(rune('a'+i/26)), Name: "x"})
	}
	c.waitConverged(5 * time.Second)
	bad := "m2"
	c.tamper.Store(&bad)
	c.hub.Partition([]string{"m2", "m3"}, []string{"m1"}) // m3 can only ask m2 first
	m3 := c.start("m3")
	if !waitFor(5*time.Second, func() bool { return m3.Stats().BlocksRejected > 0 }) {
		t.Fatalf("no corrupted block was rejected: %+v", m3.Stats())
	}
	if l, _ := m3.List(ctx, "/containers/"); len(l) != 0 {
		t.Fatalf("m3 applied %d containers from corrupted blocks", len(l))
	}
	c.hub.Heal()
	c.waitConverged(10 * time.Second)
	if st := m3.Stats(); st.BlocksRejected == 0 {
		t.Fatalf("no corrupted block was rejected: %+v", st)
	} else {
		t.Logf("m3: %d corrupted blocks rejected, %d good fetched", st.BlocksRejected, st.BlocksFetched)
	}
	c.tamper.Store(nil)
	mustPut(t, m3, &record.Machine{ID: "m3", Name: "c"})
	c.waitConverged(5 * time.Second)
}

// TestExchangeVerifiesBlocks checks the exchange on its own: blocks whose
// bytes do not hash to their CID, and blocks nobody asked for, are dropped.
func TestExchangeVerifiesBlocks(t *testing.T) {
	good := mkBlock(t, "good")
	other := mkBlock(t, "other")
	forged := forge(t, good.Cid(), "forged")
	tests := []struct {
		name         string
		served       map[string][]blk
		wantGot      int
		wantRejected uint64
	}{
		{"honest", map[string][]blk{"a": {good}}, 1, 0},
		{"forged then honest", map[string][]blk{"a": {forged}, "b": {good}}, 1, 1},
		{"only forged", map[string][]blk{"a": {forged}, "b": {forged}}, 0, 2},
		{"unrequested", map[string][]blk{"a": {other, good}}, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openOffline(t)
			var st counters
			p := newPeers("me", func() []string { return []string{"a", "b"} })
			ex := &blockExchange{fetcher: fakeFetcher(tc.served), peers: p, st: &st, bs: s.bs, log: testLogger(t), idle: time.Second}
			var got int
			ex.fetch(context.Background(), []cid.Cid{good.Cid()}, 0, "", func(b blk) bool {
				if verifyBlock(b) != nil {
					t.Errorf("delivered an unverified block")
				}
				got++
				return true
			})
			if got != tc.wantGot || st.blocksRejected.Load() != tc.wantRejected {
				t.Errorf("got %d blocks, %d rejected; want %d, %d", got, st.blocksRejected.Load(), tc.wantGot, tc.wantRejected)
			}
		})
	}
}
