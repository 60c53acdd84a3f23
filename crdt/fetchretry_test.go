package crdt

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"

	"github.com/uncloud-mesh/uncloud/gossip/gossiptest"
	"github.com/uncloud-mesh/uncloud/record"
)

// reachFetcher fetches over HTTP only where reach allows, like machines
// that cannot reach a newcomer until they hold its record.
type reachFetcher struct {
	self  string
	reach func(from, to string) bool
	http  *HTTPFetcher
}

func (f *reachFetcher) FetchBlocks(ctx context.Context, m string, req FetchRequest) (<-chan blocks.Block, error) {
	if !f.reach(f.self, m) {
		return nil, fmt.Errorf("machine %q is not known here yet", m)
	}
	return f.http.FetchBlocks(ctx, m, req)
}

// TestAnnouncedBeforeFetchable is the join of a machine: "new" writes its
// first record and announces the head to everyone at once, but only
// "issuer" can reach it, and only after a delay; "member" can fetch the
// block from the issuer only once the issuer has it. Anti-entropy and
// rebroadcasts are a minute apart, so only the store's own fetch retry can
// bring the record to the member quickly. Before the retry it came 1–2 s
// later at best (with the next head set that descended from it; here,
// never within the test).
// handlerOf serves the blocks of whatever store p holds.
func handlerOf(p *atomic.Pointer[Store]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := p.Load()
		if s == nil {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		s.BlockHandler().ServeHTTP(w, r)
	})
}

// blockServers starts one HTTP server per name that serves the blocks of
// whichever store is later put in its slot (503 until then).
func blockServers(t *testing.T, names []string) (map[string]*atomic.Pointer[Store], map[string]string) {
	stores := map[string]*atomic.Pointer[Store]{}
	urls := map[string]string{}
	for _, n := range names {
		p := &atomic.Pointer[Store]{}
		stores[n] = p
		srv := httptest.NewServer(handlerOf(p))
		t.Cleanup(srv.Close)
		urls[n] = srv.URL
	}
	return stores, urls
}

func TestAnnouncedBeforeFetchable(t *testing.T) {
	hub := gossiptest.NewHub(time.Minute)
	t.Cleanup(hub.Close)
	names := []string{"new", "issuer", "member"}
	stores, urls := blockServers(t, names)
	const issuerDelay = 60 * time.Millisecond
	var announced atomic.Int64 // unix nanos of the write on "new"
	reach := func(from, to string) bool {
		switch {
		case to != "new":
			return true
		case from == "issuer":
			at := announced.Load()
			return at != 0 && time.Since(time.Unix(0, at)) >= issuerDelay
		}
		return false // the member never reaches the newcomer in this test
	}
	log := testLogger(t)
	for _, n := range names {
		s, err := Open(context.Background(), Config{
			Dir: t.TempDir(), Gossip: hub.Node(n), Log: log.With("m", n),
			Fetcher: &reachFetcher{self: n, reach: reach, http: &HTTPFetcher{BaseURL: func(m string) (string, error) {
				return urls[m], nil
			}}},
			// Like the agent: gossip's live members, not only the
			// machines heard from on the crdt topic.
			LiveMachines:        func() []string { return names },
			RebroadcastInterval: time.Minute, FetchIdle: time.Second, DAGSyncerTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		stores[n].Store(s)
		t.Cleanup(func() { s.Close() })
	}
	ctx := context.Background()
	rec := &record.Machine{ID: "new", Name: "new"}
	has := func(n string) bool {
		_, err := stores[n].Load().Get(ctx, rec.Key())
		return err == nil
	}
	announced.Store(time.Now().UnixNano())
	mustPut(t, stores["new"].Load(), rec)
	start := time.Now()
	arrived := map[string]time.Duration{}
	waitFor(10*time.Second, func() bool {
		for _, n := range []string{"issuer", "member"} {
			if _, ok := arrived[n]; !ok && has(n) {
				arrived[n] = time.Since(start)
			}
		}
		return len(arrived) == 2
	})
	t.Logf("record of new: on the issuer after %v, on the member after %v (issuer could reach new after %v); stats: issuer %+v, member %+v",
		arrived["issuer"], arrived["member"], issuerDelay, stores["issuer"].Load().Stats(), stores["member"].Load().Stats())
	onIssuer, ok1 := arrived["issuer"]
	onMember, ok2 := arrived["member"]
	if !ok1 || !ok2 {
		t.Fatalf("record of new not everywhere after 10 s: arrived %v", arrived)
	}
	// The retry ladder (20, 40, 80, 160, 200 ms ... ± 25 %) asks again at
	// most 250 ms after the block became fetchable from the issuer; a
	// loaded machine gets the rest of the margin.
	if lag := onMember - onIssuer; lag > 600*time.Millisecond {
		t.Errorf("the member got the record %v after the issuer had it, want < 600 ms", lag)
	}
	if stores["member"].Load().Stats().FetchRetries == 0 {
		t.Errorf("the member never retried a fetch, so the test did not exercise the retry")
	}
}
