package membership

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// fakeCalls is the machine API of the other machines: each answers as
// its function says; a machine without one is unreachable.
type fakeCalls struct {
	mu       sync.Mutex
	reserve  map[string]func(ctx context.Context, req api.ReserveRequest) error
	keyring  map[string]func(ctx context.Context) (api.GossipKeyring, error)
	pushed   map[string]api.GossipKeyring
	reserves []string // who was asked to promise, in call order
	pulls    []string // whose keyring was asked for
}

var errUnreachable = errors.New("no route to machine")

func newFakeCalls() *fakeCalls {
	return &fakeCalls{reserve: map[string]func(context.Context, api.ReserveRequest) error{},
		keyring: map[string]func(context.Context) (api.GossipKeyring, error){}, pushed: map[string]api.GossipKeyring{}}
}

// promises, refuses and timesOut are the three ways a machine answers a
// reservation.
func promises(context.Context, api.ReserveRequest) error { return nil }

func refuses(_ context.Context, req api.ReserveRequest) error {
	return errors.New("subnet is promised to machine someone-else")
}

func timesOut(ctx context.Context, _ api.ReserveRequest) error {
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeCalls) Reserve(ctx context.Context, id string, req api.ReserveRequest) error {
	f.mu.Lock()
	f.reserves = append(f.reserves, id)
	answer := f.reserve[id]
	f.mu.Unlock()
	if answer == nil {
		return errUnreachable
	}
	return answer(ctx, req)
}

func (f *fakeCalls) Keyring(ctx context.Context, id string) (api.GossipKeyring, error) {
	f.mu.Lock()
	f.pulls = append(f.pulls, id)
	answer := f.keyring[id]
	f.mu.Unlock()
	if answer == nil {
		return api.GossipKeyring{}, errUnreachable
	}
	return answer(ctx)
}

func (f *fakeCalls) Leave(ctx context.Context, id string) (api.LeaveResult, error) {
	return api.LeaveResult{}, errUnreachable
}

func (f *fakeCalls) PushKeyring(ctx context.Context, id string, k api.GossipKeyring) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keyring[id] == nil {
		return errUnreachable
	}
	f.pushed[id] = k
	return nil
}

func (f *fakeCalls) UpdateSelf(ctx context.Context, id string, u api.MachineUpdate) (*record.Machine, error) {
	return nil, errUnreachable
}

func (f *fakeCalls) pullCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pulls)
}

// fakeGossip records the keys gossip was given.
type fakeGossip struct {
	mu   sync.Mutex
	keys [][][]byte
}

func (g *fakeGossip) SetKeys(keys [][]byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.keys = append(g.keys, keys)
	return nil
}

func (g *fakeGossip) Join(ctx context.Context, addrs []string) (int, error) { return len(addrs), nil }

func (g *fakeGossip) last() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.keys) == 0 {
		return nil
	}
	return g.keys[len(g.keys)-1]
}

type fakeDevice struct {
	mu    sync.Mutex
	peers []tun.Peer
}

func (d *fakeDevice) SetPeer(p tun.Peer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers = append(d.peers, p)
	return nil
}

// testMachine is this machine's state for a test: machine "self" in
// subnet 1 of network "net1", saved in a fresh data dir.
func testMachine(t *testing.T) (*MachineState, string) {
	t.Helper()
	st, err := NewNetwork(InitOptions{Name: "self"})
	if err != nil {
		t.Fatal(err)
	}
	st.NetworkID, st.MachineID = "net1", "self"
	dir := t.TempDir()
	if err := st.Save(dir); err != nil {
		t.Fatal(err)
	}
	return st, dir
}

// newTestMembers is membership of machine "self" with the given parts;
// its background work ends with the test.
func newTestMembers(t *testing.T, p Parts) *Members {
	t.Helper()
	st, dir := testMachine(t)
	identity, err := api.NewIdentity(st.IdentitySeed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	m, err := New(Config{DataDir: dir, State: st, Identity: identity, Ctx: ctx,
		Go:             func(f func()) { wg.Go(f) },
		Endpoints:      func() []netip.AddrPort { return []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:51820")} },
		GossipPort:     7946,
		MachineAPIPort: 51822,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(p)
	return m
}

// putMachine writes the record of a machine that owns subnet n.
func putMachine(t *testing.T, r Records, id string, n meshaddr.Subnet) *record.Machine {
	t.Helper()
	wg, _ := tun.GeneratePrivateKey()
	rec := &record.Machine{ID: id, Name: id, Subnet: n.String(), WireGuardKey: wg.PublicKey().String(), IdentityKey: "identity-of-" + id}
	if err := r.Put(context.Background(), rec.Key(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
