package crdt

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// BlockFetcher is the transport that brings DAG blocks from another machine.
// It is implemented over HTTP here (HTTPFetcher) and over the mutual-TLS
// machine API by the agent. Implementations need not verify blocks: the
// exchange recomputes every CID itself.
type BlockFetcher interface {
	// FetchBlocks streams the blocks of req from machine. The channel is
	// closed when the remote is done, fails, or ctx ends; missing blocks
	// are simply absent.
	FetchBlocks(ctx context.Context, machine string, req FetchRequest) (<-chan blocks.Block, error)
}

// FetchRequest asks a machine for blocks.
type FetchRequest struct {
	// Want are the blocks asked for; they are sent first.
	Want []cid.Cid `json:"want"`
	// Ancestors > 0 asks for up to that many ancestors of Want as well,
	// breadth first, so that one request catches a replica up instead of
	// one round trip per DAG level.
	Ancestors int `json:"ancestors,omitempty"`
	// Have are blocks (normally the requester's heads) whose ancestry the
	// requester already holds: the walk does not descend through them.
	Have []cid.Cid `json:"have,omitempty"`
}

// Wire limits. A DAG block holds one go-ds-crdt delta, bounded by
// MaxBatchDeltaSize (1 MB); CIDs are well under 100 bytes.
const (
	maxWireCID      = 128
	maxWireBlock    = 2 << 20
	maxWantPerFetch = 4096
	maxAncestors    = 1 << 20
)

// writeFrame writes one block as uvarint(len cid) cid uvarint(len data) data.
func writeFrame(w io.Writer, b blocks.Block) error {
	var hdr [binary.MaxVarintLen64]byte
	c := b.Cid().Bytes()
	n := binary.PutUvarint(hdr[:], uint64(len(c)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	if _, err := w.Write(c); err != nil {
		return err
	}
	n = binary.PutUvarint(hdr[:], uint64(len(b.RawData())))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := w.Write(b.RawData())
	return err
}

// errFrame marks a malformed frame (as opposed to a clean end of stream).
var errFrame = errors.New("malformed block frame")

// readFrame reads one frame. It returns io.EOF at a clean end of stream. The
// block is NOT verified: the exchange does that.
func readFrame(r *bufio.Reader) (blocks.Block, error) {
	cl, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%w: cid length: %w", errFrame, err)
	}
	if cl == 0 || cl > maxWireCID {
		return nil, fmt.Errorf("%w: cid length %d", errFrame, cl)
	}
	cb := make([]byte, cl)
	if _, err := io.ReadFull(r, cb); err != nil {
		return nil, fmt.Errorf("%w: cid: %w", errFrame, err)
	}
	c, err := cid.Cast(cb)
	if err != nil {
		return nil, fmt.Errorf("%w: cid: %w", errFrame, err)
	}
	dl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: data length of %s: %w", errFrame, c, err)
	}
	if dl > maxWireBlock {
		return nil, fmt.Errorf("%w: data length %d of %s", errFrame, dl, c)
	}
	data := make([]byte, dl)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("%w: data of %s: %w", errFrame, c, err)
	}
	// NewBlockWithCid does not check the hash (outside debug builds).
	return blocks.NewBlockWithCid(data, c)
}

// verifyBlock recomputes b's CID from its bytes with the same prefix
// (version, codec, hash function and length).
func verifyBlock(b blocks.Block) error {
	want := b.Cid()
	got, err := want.Prefix().Sum(b.RawData())
	if err != nil {
		return fmt.Errorf("hash block %s: %w", want, err)
	}
	if !got.Equals(want) {
		return fmt.Errorf("block claims %s but hashes to %s", want, got)
	}
	return nil
}
