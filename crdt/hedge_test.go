package crdt

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"

	"github.com/uncloud-mesh/uncloud/record"
)

// TestFetchAsksNextWhenSilent: the machine asked first accepts the
// request and never answers, as a newcomer does while its tunnel is not up
// (the agent's fetch then waited for TCP's 1 s retransmission). The next
// machine must be asked hedgeAfter later, not when the first gives up. A
// first machine that answers is asked alone.
func TestFetchAsksNextWhenSilent(t *testing.T) {
	stop := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so that the client's going away ends r's context
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(stop) }) // before hung.Close, which waits for the handler

	src := openOffline(t)
	ctx := context.Background()
	mustPut(t, src, &record.Machine{ID: "m1", Name: "m1"})
	mustPut(t, src, &record.Machine{ID: "m2", Name: "m2"})
	good := httptest.NewServer(src.BlockHandler())
	t.Cleanup(good.Close)
	urls := map[string]string{"hung": hung.URL, "good": good.URL}

	for _, tc := range []struct {
		name, first string
		wantHedged  bool
	}{
		{"first silent: the next asked beside it", "hung", true},
		{"first answers: asked alone", "good", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, err := Open(ctx, Config{
				Dir: t.TempDir(), Name: "dst", Log: testLogger(t),
				Fetcher:      &HTTPFetcher{BaseURL: func(m string) (string, error) { return urls[m], nil }},
				LiveMachines: func() []string { return []string{"hung", "good"} },
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dst.Close() })
			heads := src.Heads(ctx)
			var delivered atomic.Int32
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			start := time.Now()
			left := dst.ex.fetch(fctx, heads, prefetchAncestors, tc.first, func(b blocks.Block) bool {
				delivered.Add(1)
				return dst.bs.Put(fctx, b) == nil
			})
			took := time.Since(start)
			t.Logf("%d heads fetched in %v, stats %+v", len(heads), took, dst.Stats())
			if left != 0 || int(delivered.Load()) != len(heads) {
				t.Fatalf("left %d, delivered %d of %d heads (after %v)", left, delivered.Load(), len(heads), took)
			}
			// hedgeAfter is 100 ms; the rest is margin for a loaded machine.
			if took > time.Second {
				t.Errorf("fetch took %v with %q asked first, want < 1 s", took, tc.first)
			}
			if hedged := dst.Stats().FetchHedged > 0; hedged != tc.wantHedged {
				t.Errorf("hedged = %v, want %v", hedged, tc.wantHedged)
			}
			// The ancestor (the first write) came too, and only once.
			if n := dst.Stats().BlocksFetched; n != 2 {
				t.Errorf("%d blocks fetched, want 2 (two writes)", n)
			}
		})
	}
}
