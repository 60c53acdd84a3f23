package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/internal/atomicfile"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

func TestPromiseBook(t *testing.T) {
	dir := t.TempDir()
	b, _ := loadPromiseBook(dir, time.Now())
	owners := map[meshaddr.Subnet]string{1: "m1"}
	if err := b.promise(1, "m9", "asker", owners, time.Now()); err == nil {
		t.Fatal("promised a subnet that a machine record owns")
	}
	if err := b.promise(2, "m2", "asker", owners, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.promise(2, "m2", "asker", owners, time.Now()); err != nil {
		t.Fatalf("repeating the same promise: %v", err)
	}
	if err := b.promise(2, "m3", "asker", owners, time.Now()); err == nil || !strings.Contains(err.Error(), "promised to machine m2") {
		t.Fatalf("second machine got subnet 2: %v", err)
	}
	reloaded, _ := loadPromiseBook(dir, time.Now())
	if err := reloaded.promise(2, "m3", "asker", owners, time.Now()); err == nil {
		t.Fatal("a promise did not survive a restart")
	}
}

// TestReserveSubnetMajority: a join gets a subnet only with promises from
// a majority of the known machines, this one included; refusals and
// machines that do not answer count against it.
func TestReserveSubnetMajority(t *testing.T) {
	type answer = func(context.Context, api.ReserveRequest) error
	cases := []struct {
		name   string
		others []answer // machines 2.. of the network, by how they answer
		ok     bool
	}{
		{"alone", nil, true},
		{"two of two", []answer{promises}, true},
		{"one of two", []answer{refuses}, false},
		{"two of three, one down", []answer{promises, timesOut}, true},
		{"one of three", []answer{refuses, timesOut}, false},
		{"two of four is no majority", []answer{promises, refuses, timesOut}, false},
		{"three of four", []answer{promises, promises, timesOut}, true},
		{"three of five, others refuse or time out", []answer{promises, promises, refuses, timesOut}, true},
		{"minority side of a partition", []answer{promises, timesOut, timesOut, timesOut}, false},
		{"all but one unreachable", []answer{nil, nil, promises}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := crdttest.Open(t, "self")
			calls := newFakeCalls()
			m := newTestMembers(t, Parts{Records: store, Calls: calls})
			// Timeouts are only waited for when the majority is missing.
			m.reserveCallTimeout = 200 * time.Millisecond
			if tc.ok {
				m.reserveCallTimeout = time.Hour
			}
			putMachine(t, store, "self", 1)
			for i, a := range tc.others {
				id := fmt.Sprintf("m%d", i+2)
				putMachine(t, store, id, meshaddr.Subnet(i+2))
				if a != nil {
					calls.reserve[id] = a
				}
			}
			want := meshaddr.Subnet(len(tc.others) + 2)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := m.reserveSubnet(ctx, "joiner")
			if !tc.ok {
				total := len(tc.others) + 1
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("of %d machines agreed, a join needs %d (a partition or machines down?)", total, total/2+1)) {
					t.Fatalf("reserveSubnet = %v, %v; want the majority refusal", got, err)
				}
				return
			}
			if err != nil || got != want {
				t.Fatalf("reserveSubnet = %v, %v; want subnet %v", got, err, want)
			}
			if owner := m.promises.taken(nil, time.Now())[want]; owner != "joiner" {
				t.Fatalf("this machine's own promise of %v is to %q", want, owner)
			}
		})
	}
}

// TestReserveSubnetLowestFree: the lowest subnet that no record owns and
// no promise holds for another machine; a machine's own promise is its.
func TestReserveSubnetLowestFree(t *testing.T) {
	store := crdttest.Open(t, "self")
	calls := newFakeCalls()
	m := newTestMembers(t, Parts{Records: store, Calls: calls})
	putMachine(t, store, "self", 1)
	putMachine(t, store, "m2", 2)
	putMachine(t, store, "m4", 4)
	calls.reserve["m2"], calls.reserve["m4"] = promises, promises
	if err := m.promises.promise(3, "earlier-joiner", "asker", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		joiner string
		want   meshaddr.Subnet
	}{
		{"new", 5},            // 1, 2 and 4 are owned, 3 is promised
		{"earlier-joiner", 3}, // its own promise
		{"new", 5},            // asked again: the same one
		{"another", 6},        // 5 is promised to "new" now
		{"earlier-joiner", 3}, // still
	} {
		got, err := m.reserveSubnet(ctx, tc.joiner)
		if err != nil || got != tc.want {
			t.Fatalf("reserveSubnet(%s) = %v, %v; want %v", tc.joiner, got, err, tc.want)
		}
	}
	// A majority suffices to go ahead; the other calls finish behind.
	testkit.EventuallyTrue(t, "every other machine asked in each reservation", 5*time.Second, func() bool {
		calls.mu.Lock()
		defer calls.mu.Unlock()
		return len(calls.reserves) == 2*5
	})
}

func TestReserveSubnetAllTaken(t *testing.T) {
	store := crdttest.Open(t, "self")
	m := newTestMembers(t, Parts{Records: store, Calls: newFakeCalls()})
	for n := meshaddr.MinSubnet; n <= meshaddr.MaxSubnet; n++ {
		if err := m.promises.promise(n, fmt.Sprintf("m%d", n), fmt.Sprintf("issuer%d", n), nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.reserveSubnet(context.Background(), "late"); err == nil || !strings.Contains(err.Error(), "all 254 subnets are taken") {
		t.Fatalf("reserveSubnet with every subnet promised: %v", err)
	}
}

// TestHandleReserve is the other side: this machine promises a subnet to
// one machine only, never one a record owns, and remembers it.
func TestHandleReserve(t *testing.T) {
	store := crdttest.Open(t, "self")
	m := newTestMembers(t, Parts{Records: store, Calls: newFakeCalls()})
	putMachine(t, store, "self", 1)
	putMachine(t, store, "m2", 2)
	srv := httptest.NewServer(http.HandlerFunc(m.HandleReserve))
	defer srv.Close()
	for _, tc := range []struct {
		body string
		want int
		says string
	}{
		{`{"subnet":3,"machine_id":"a"}`, http.StatusNoContent, ""},
		{`{"subnet":3,"machine_id":"a"}`, http.StatusNoContent, ""}, // asked again
		{`{"subnet":3,"machine_id":"b"}`, http.StatusConflict, "subnet 3 is promised to machine a"},
		{`{"subnet":2,"machine_id":"b"}`, http.StatusConflict, "subnet 2 belongs to machine m2"},
		{`{"subnet":0,"machine_id":"b"}`, http.StatusBadRequest, "bad reservation request"},
		{`{"subnet":4}`, http.StatusBadRequest, "bad reservation request"},
		{`not json`, http.StatusBadRequest, "bad reservation request"},
	} {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var msg strings.Builder
		_, _ = fmt.Fprint(&msg, readAll(t, resp))
		if resp.StatusCode != tc.want || !strings.Contains(msg.String(), tc.says) {
			t.Fatalf("reserve %s = %d %q, want %d %q", tc.body, resp.StatusCode, msg.String(), tc.want, tc.says)
		}
	}
	reloaded, err := loadPromiseBook(m.cfg.DataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.taken(nil, time.Now())[3] != "a" {
		t.Fatalf("promise not on disk: %v", reloaded.taken(nil, time.Now()))
	}
}

// TestPromiseExpiry: a promise with no machine record goes after the
// TTL, the holder's own as well as one made for another machine; one
// whose record appeared is fulfilled and stays, even after the record is
// gone; the time survives a restart.
func TestPromiseExpiry(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, _ := loadPromiseBook(dir, t0)
	for n, id := range map[meshaddr.Subnet]string{3: "slow-but-fine", 4: "never-came"} {
		if err := b.promise(n, id, "asker", nil, t0); err != nil {
			t.Fatal(err)
		}
	}
	// The slow join's record replicates after 9 minutes.
	owners := map[meshaddr.Subnet]string{3: "slow-but-fine"}
	if got := b.taken(owners, t0.Add(9*time.Minute)); len(got) != 2 {
		t.Fatalf("at 9 min: %v, want both promises", got)
	}
	reloaded, _ := loadPromiseBook(dir, t0.Add(time.Hour))
	if got := reloaded.taken(nil, t0.Add(11*time.Minute)); len(got) != 1 || got[3] != "slow-but-fine" {
		t.Fatalf("at 11 min after a restart: %v, want only the fulfilled promise", got)
	}
	if err := reloaded.promise(4, "another", "asker", nil, t0.Add(11*time.Minute)); err != nil {
		t.Fatalf("an expired promise still holds its subnet: %v", err)
	}
	if err := reloaded.promise(3, "another", "asker", nil, t0.Add(48*time.Hour)); err == nil {
		t.Fatal("a fulfilled promise expired")
	}
	// A file of the earlier format: its promises start their clock now.
	legacy, _ := json.Marshal(map[string]any{"promised": map[string]string{"7": "old"}})
	old := t.TempDir()
	if err := atomicfile.Write(filepath.Join(old, promisesFile), legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	lb, err := loadPromiseBook(old, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := lb.taken(nil, t0.Add(5*time.Minute)); got[7] != "old" {
		t.Fatalf("legacy promise not read: %v", got)
	}
	if got := lb.taken(nil, t0.Add(11*time.Minute)); len(got) != 0 {
		t.Fatalf("legacy promise never expires: %v", got)
	}
}

// TestPromisesPerAsker: one machine cannot hold more than maxOpenPerAsker
// promises that no record fulfils (a member gone rogue asking for every
// subnet); fulfilled or expired ones do not count, and others still get
// theirs.
func TestPromisesPerAsker(t *testing.T) {
	b, _ := loadPromiseBook(t.TempDir(), time.Now())
	t0 := time.Now()
	for n := meshaddr.Subnet(2); n < 2+maxOpenPerAsker; n++ {
		if err := b.promise(n, fmt.Sprintf("ghost%d", n), "rogue", nil, t0); err != nil {
			t.Fatal(err)
		}
	}
	err := b.promise(100, "ghost100", "rogue", nil, t0)
	if !errors.Is(err, errTooManyPromises) || !strings.Contains(err.Error(), "machine rogue holds 16") {
		t.Fatalf("promise beyond the bound: %v", err)
	}
	if err := b.promise(101, "real", "honest", nil, t0); err != nil {
		t.Fatalf("another machine's promise: %v", err)
	}
	// One ghost turns out real (its record appears): room for one more.
	if err := b.promise(100, "ghost100", "rogue", map[meshaddr.Subnet]string{2: "ghost2"}, t0); err != nil {
		t.Fatalf("after one promise was fulfilled: %v", err)
	}
	// Expired ones make room too.
	if err := b.promise(102, "ghost102", "rogue", nil, t0.Add(promiseTTL+time.Second)); err != nil {
		t.Fatalf("after the promises expired: %v", err)
	}
}
