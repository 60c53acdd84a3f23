package membership

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestKeyringNewer(t *testing.T) {
	cur := gossipKeyring{Epoch: 3, Keys: [][]byte{key(5)}}
	for _, tc := range []struct {
		name string
		k    gossipKeyring
		want bool
	}{
		{"higher epoch", gossipKeyring{Epoch: 4, Keys: [][]byte{key(1)}}, true},
		{"lower epoch", gossipKeyring{Epoch: 2, Keys: [][]byte{key(9)}}, false},
		{"same epoch, same key", gossipKeyring{Epoch: 3, Keys: [][]byte{key(5)}}, false},
		{"same epoch, higher key wins", gossipKeyring{Epoch: 3, Keys: [][]byte{key(6)}}, true},
		{"same epoch, lower key", gossipKeyring{Epoch: 3, Keys: [][]byte{key(4)}}, false},
		{"no key", gossipKeyring{Epoch: 9}, false},
	} {
		if got := tc.k.newer(cur); got != tc.want {
			t.Errorf("%s: newer = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAdoptKeyring: a newer keyring is saved, then used with the previous
// key still accepted; an older or equal one changes nothing; an invalid
// one is refused.
func TestAdoptKeyring(t *testing.T) {
	g := &fakeGossip{}
	store := crdttest.Open(t, "self")
	// Two removals: epochs up to 2+epochSlack may be adopted.
	for _, id := range []string{"gone1", "gone2"} {
		rv := &record.Revoked{MachineID: id, At: time.Now()}
		if err := store.Put(context.Background(), rv.Key(), rv); err != nil {
			t.Fatal(err)
		}
	}
	m := newTestMembers(t, Parts{Gossip: g, Records: store})
	m.SetKnown(nil, nil, nil) // no other machine to rejoin
	m.state.GossipKeyEpoch = 2
	old := m.Snapshot().GossipKeys[0]

	for _, tc := range []struct {
		name    string
		k       gossipKeyring
		adopted bool
		err     string
	}{
		{"older epoch", gossipKeyring{Epoch: 1, Keys: [][]byte{key(0xff)}}, false, ""},
		{"equal", gossipKeyring{Epoch: 2, Keys: [][]byte{old}}, false, ""},
		{"no key", gossipKeyring{Epoch: 7}, false, "keyring has no key"},
		{"short key", gossipKeyring{Epoch: 7, Keys: [][]byte{{1, 2, 3}}}, false, "keyring key 0 is 3 bytes, want 32"},
		{"pinned epoch", gossipKeyring{Epoch: math.MaxUint64, Keys: [][]byte{key(0xff)}}, false, "beyond the removals"},
		{"epoch past the removals", gossipKeyring{Epoch: 2 + epochSlack + 1, Keys: [][]byte{key(0xff)}}, false, "beyond the removals"},
	} {
		adopted, err := m.adoptKeyring(tc.k)
		if adopted != tc.adopted || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Fatalf("%s: adoptKeyring = %v, %v; want %v, %q", tc.name, adopted, err, tc.adopted, tc.err)
		}
		if st := m.Snapshot(); st.GossipKeyEpoch != 2 || !bytes.Equal(st.GossipKeys[0], old) || g.last() != nil {
			t.Fatalf("%s changed the keyring: epoch %d", tc.name, st.GossipKeyEpoch)
		}
	}

	m.grace = 50 * time.Millisecond
	adopted, err := m.adoptKeyring(gossipKeyring{Epoch: 3, Keys: [][]byte{key(7)}})
	if !adopted || err != nil {
		t.Fatalf("newer keyring: %v, %v", adopted, err)
	}
	if got := g.last(); len(got) != 2 || !bytes.Equal(got[0], key(7)) || !bytes.Equal(got[1], old) {
		t.Fatalf("gossip keys after adoption = %x, want the new key first, the previous one still accepted", got)
	}
	onDisk, err := LoadMachineState(m.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk.GossipKeyEpoch != 3 || len(onDisk.GossipKeys) != 1 || !bytes.Equal(onDisk.GossipKeys[0], key(7)) {
		t.Fatalf("saved keyring: epoch %d, %d keys", onDisk.GossipKeyEpoch, len(onDisk.GossipKeys))
	}
	testkit.EventuallyTrue(t, "the previous key dropped after the grace period", 5*time.Second, func() bool {
		got := g.last()
		return len(got) == 1 && bytes.Equal(got[0], key(7))
	})
}

// TestPullKeyrings: after a start the machine asks every known machine
// until a majority has answered, adopts the newest keyring it heard, then
// asks one machine now and then.
func TestPullKeyrings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := newFakeCalls()
		g := &fakeGossip{}
		m := newTestMembers(t, Parts{Calls: calls, Gossip: g})
		m.pullInterval = time.Hour
		var seeds []Seed
		for i, id := range []string{"a", "b", "c", "d"} {
			n := meshaddr.Subnet(i + 2)
			seeds = append(seeds, Seed{Name: id, MachineID: id, Subnet: n.Prefix(), Address: n.MachineAddr()})
		}
		m.SetKnown(nil, nil, seeds)
		ours := m.keyring()
		answers := func(k gossipKeyring) func(context.Context) (api.GossipKeyring, error) {
			return func(context.Context) (api.GossipKeyring, error) { return api.GossipKeyring(k), nil }
		}
		calls.keyring["a"] = answers(gossipKeyring{Epoch: 1, Keys: [][]byte{key(1)}})
		calls.keyring["b"] = answers(ours)
		calls.keyring["d"] = func(ctx context.Context) (api.GossipKeyring, error) { // down: every call times out
			<-ctx.Done()
			return api.GossipKeyring{}, ctx.Err()
		}
		// c is unreachable until it comes back after the first round.

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			m.PullKeyrings(ctx)
			close(done)
		}()
		// Round one (5 s: d times out): only a and b of four answer, no
		// majority yet; a's keyring is newer and adopted at once.
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if n, ep := calls.pullCount(), m.keyring().Epoch; n != 4 || ep != 1 {
			t.Fatalf("after round one: %d calls, epoch %d; want 4, 1", n, ep)
		}
		calls.mu.Lock()
		calls.keyring["c"] = answers(gossipKeyring{Epoch: 2, Keys: [][]byte{key(2)}})
		calls.mu.Unlock()
		// Round two starts keyringStartupRetry later: c answers too, three
		// of four is a majority, and c's keyring is the newest heard.
		time.Sleep(keyringStartupRetry + 5*time.Second)
		synctest.Wait()
		if n, k := calls.pullCount(), m.keyring(); n != 8 || k.Epoch != 2 || !bytes.Equal(k.Keys[0], key(2)) {
			t.Fatalf("after round two: %d calls, epoch %d; want 8, 2", n, k.Epoch)
		}
		// Settled: no more rounds to everyone, one machine at a time.
		time.Sleep(m.pullInterval/2 - time.Minute)
		synctest.Wait()
		if n := calls.pullCount(); n != 8 {
			t.Fatalf("%d calls before the first slow pull, want 8", n)
		}
		time.Sleep(m.pullInterval + 2*time.Minute)
		synctest.Wait()
		if n := calls.pullCount(); n < 9 || n > 10 {
			t.Fatalf("%d calls after 1.5 pull intervals, want one or two more than 8", n)
		}
		cancel()
		<-done
	})
}

// TestRemoveMachineRotates: removal revokes the machine (never known
// again), deletes its record, and pushes a new keyring of the next epoch
// to the machines that can be reached.
func TestRemoveMachineRotates(t *testing.T) {
	store := crdttest.Open(t, "self")
	calls := newFakeCalls()
	g := &fakeGossip{}
	m := newTestMembers(t, Parts{Records: store, Calls: calls, Gossip: g})
	putMachine(t, store, "self", 1)
	gone := putMachine(t, store, "gone", 2)
	putMachine(t, store, "up", 3)
	putMachine(t, store, "down", 4)
	calls.keyring["up"] = func(context.Context) (api.GossipKeyring, error) { return api.GossipKeyring{}, nil }
	before := m.keyring()

	ctx := context.Background()
	if _, err := m.RemoveMachine(ctx, "self"); err == nil || !strings.Contains(err.Error(), "is this machine") {
		t.Fatalf("removing oneself: %v", err)
	}
	res, err := m.RemoveMachine(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "gone" || res.Rotated != 1 || res.Machines != 2 || len(res.Missed) != 1 || res.Missed[0] != "down" {
		t.Fatalf("remove result = %+v", res)
	}
	k := m.keyring()
	if k.Epoch != before.Epoch+1 || bytes.Equal(k.Keys[0], before.Keys[0]) {
		t.Fatalf("keyring after removal: epoch %d (was %d)", k.Epoch, before.Epoch)
	}
	if pushed := calls.pushed["up"]; pushed.Epoch != k.Epoch || !bytes.Equal(pushed.Keys[0], k.Keys[0]) {
		t.Fatalf("pushed %+v, want this machine's new keyring", pushed)
	}
	if _, err := store.Get(ctx, gone.Key()); err == nil {
		t.Fatal("the removed machine's record is still there")
	}
	if rv := m.Revoked(ctx)["gone"]; rv == nil || rv.WireGuardKey != gone.WireGuardKey || rv.By != "self" {
		t.Fatalf("revoked = %+v", rv)
	}
	// Even if the removed machine rewrites its record.
	if err := store.Put(ctx, gone.Key(), gone); err != nil {
		t.Fatal(err)
	}
	for _, known := range m.Known(ctx) {
		if known.ID == "gone" {
			t.Fatal("a removed machine is known again after rewriting its record")
		}
	}
	if _, err := m.RemoveMachine(ctx, "gone"); err == nil || !strings.Contains(err.Error(), `no machine named "gone"`) {
		t.Fatalf("removing it twice: %v", err)
	}
}
