package crdt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// BlocksPath is where the block handler expects POSTed FetchRequests.
const BlocksPath = "/v1/crdt/blocks"

// blockHandler serves blocks from the local blockstore.
type blockHandler struct {
	bs  blockstore.Blockstore
	log *slog.Logger
}

// NewBlockHandler returns the handler that answers FetchRequests (POST
// BlocksPath, JSON body) with a stream of block frames. The agent mounts it on
// its mutual-TLS machine API; authentication is the mount point's business.
func NewBlockHandler(bs blockstore.Blockstore, log *slog.Logger) http.Handler {
	return &blockHandler{bs: bs, log: log}
}

func (h *blockHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST a fetch request", http.StatusMethodNotAllowed)
		return
	}
	var req FetchRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "bad fetch request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.Want) == 0 || len(req.Want) > maxWantPerFetch || len(req.Have) > maxWantPerFetch {
		http.Error(w, fmt.Sprintf("want 1..%d blocks, have at most %d", maxWantPerFetch, maxWantPerFetch), http.StatusBadRequest)
		return
	}
	req.Ancestors = min(max(req.Ancestors, 0), maxAncestors)
	w.Header().Set("Content-Type", "application/octet-stream")
	sent, err := h.stream(r.Context(), w, req)
	if err != nil && r.Context().Err() == nil {
		h.log.Debug("block stream ended early", "sent", sent, "err", err)
	}
}

// stream writes the wanted blocks, then their ancestors breadth first,
// never descending through req.Have.
func (h *blockHandler) stream(ctx context.Context, w http.ResponseWriter, req FetchRequest) (int, error) {
	bw := bufio.NewWriterSize(w, 32<<10)
	flusher, _ := w.(http.Flusher)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	stop := cid.NewSet()
	for _, c := range req.Have {
		stop.Add(c)
	}
	queue := make([]cid.Cid, 0, len(req.Want))
	for _, c := range req.Want {
		if stop.Visit(c) {
			queue = append(queue, c)
		}
	}
	// Wanted blocks are sent even if the requester says it has them.
	for _, c := range req.Want {
		stop.Add(c)
	}
	budget := len(queue) + req.Ancestors
	sent := 0
	for len(queue) > 0 && sent < budget {
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
		c := queue[0]
		queue = queue[1:]
		b, err := h.bs.Get(ctx, c)
		if err != nil {
			if ipld.IsNotFound(err) {
				continue
			}
			return sent, fmt.Errorf("read block %s: %w", c, err)
		}
		if err := writeFrame(bw, b); err != nil {
			return sent, fmt.Errorf("write block %s: %w", c, err)
		}
		sent++
		if sent%64 == 0 {
			if err := flush(); err != nil {
				return sent, err
			}
		}
		if req.Ancestors > 0 {
			for _, l := range blockLinks(b) {
				if stop.Visit(l) {
					queue = append(queue, l)
				}
			}
		}
	}
	return sent, flush()
}

// blockLinks returns the links of a dag-pb block (go-ds-crdt's format), or
// nothing for any other block.
func blockLinks(b blocks.Block) []cid.Cid {
	if b.Cid().Prefix().Codec != cid.DagProtobuf {
		return nil
	}
	n, err := merkledag.DecodeProtobuf(b.RawData())
	if err != nil {
		return nil
	}
	out := make([]cid.Cid, 0, len(n.Links()))
	for _, l := range n.Links() {
		out = append(out, l.Cid)
	}
	return out
}

// HTTPFetcher fetches blocks from other machines' block handlers.
type HTTPFetcher struct {
	// BaseURL maps a machine name to the base URL its handler is mounted
	// under (BlocksPath is appended).
	BaseURL func(machine string) (string, error)
	// Client defaults to http.DefaultClient; the agent passes its mTLS client.
	Client *http.Client
	Log    *slog.Logger
}

// FetchBlocks implements BlockFetcher.
func (f *HTTPFetcher) FetchBlocks(ctx context.Context, machine string, req FetchRequest) (<-chan blocks.Block, error) {
	base, err := f.BaseURL(machine)
	if err != nil {
		return nil, fmt.Errorf("address of machine %q: %w", machine, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode fetch request for %q: %w", machine, err)
	}
	url := strings.TrimSuffix(base, "/") + BlocksPath
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("fetch request to %s: %w", url, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("fetch blocks from %q: %w", machine, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("fetch blocks from %q: %s: %s", machine, resp.Status, bytes.TrimSpace(msg))
	}
	out := make(chan blocks.Block, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		r := bufio.NewReaderSize(resp.Body, 32<<10)
		for {
			b, err := readFrame(r)
			if err != nil {
				if err != io.EOF && ctx.Err() == nil && f.Log != nil {
					f.Log.Debug("block stream broken", "machine", machine, "err", err)
				}
				return
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
