package crdt

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// hidingVerifier believes every record, and keeps the machine IDs of the
// last Reset. The first Reset that would see a hidden machine does not:
// as a replicated write's hook does, which go-ds-crdt calls before the
// batch holding the value commits.
type hidingVerifier struct {
	mu      sync.Mutex
	hide    map[string]bool
	members []string
}

func (v *hidingVerifier) Reset(machines, _ []Signed) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	var ids []string
	for _, s := range machines {
		m, ok := s.Record.(*record.Machine)
		if !ok {
			continue
		}
		if v.hide[m.ID] {
			delete(v.hide, m.ID) // seen the next time
			continue
		}
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	changed := !slices.Equal(ids, v.members)
	v.members = ids
	return changed
}

func (v *hidingVerifier) Check(Signed) error { return nil }

func (v *hidingVerifier) has(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Contains(v.members, id)
}

type namedSigner string

func (n namedSigner) SignerID() string     { return string(n) }
func (namedSigner) Sign(msg []byte) []byte { return []byte("sig") }

// TestTrustViewAfterLateCommit: a machine record replicated from another
// machine whose hook came before its value could be read is in the trust
// view once the value can be read (the delayed re-read rebuilds the view),
// not only when some other machine record changes. Before, a machine that
// had just joined was left out of `machine ls` on one host for a minute
// (TestJoinDuringPartition, once in CI).
func TestTrustViewAfterLateCommit(t *testing.T) {
	ctx := context.Background()
	v := &hidingVerifier{hide: map[string]bool{"m2": true}}
	s, err := Open(ctx, Config{Dir: t.TempDir(), Name: "m1", Log: testLogger(t), Verifier: v, Signer: namedSigner("m1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	raw, err := encodeRecord(&record.Machine{ID: "m2", Name: "m2", Subnet: "10.210.2.0/24"}, namedSigner("m2"))
	if err != nil {
		t.Fatal(err)
	}
	// As a replicated write arrives: through the store, not as a local
	// write (which rebuilds the view at once).
	if err := s.putRaw(ctx, record.MachinesPrefix+"m2", raw); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !v.has("m2") {
		if time.Now().After(deadline) {
			t.Fatal("m2's record is readable but not in the trust view 5 s later")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
