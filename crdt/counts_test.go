package crdt

import (
	"context"
	"testing"

	"github.com/uncloud-mesh/uncloud/record"
)

// TestCounts: keys are counted by prefix, deleted ones not at all, and
// every write adds a block and leaves one head.
func TestCounts(t *testing.T) {
	ctx := context.Background()
	s := openOffline(t)
	for _, r := range []Record{
		&record.Machine{ID: "m1", Name: "one"},
		&record.Machine{ID: "m2", Name: "two"},
		&record.Service{Name: "web"},
		&record.Service{Name: "db"},
		&record.Service{Name: "cache"},
	} {
		if err := s.Put(ctx, r.Key(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, (&record.Service{Name: "cache"}).Key()); err != nil {
		t.Fatal(err)
	}
	c, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Keys["machines"] != 2 || c.Keys["services"] != 2 || len(c.Keys) != 2 {
		t.Errorf("keys by prefix: %v, want machines 2, services 2", c.Keys)
	}
	if c.Blocks < 6 {
		t.Errorf("%d blocks after 6 writes", c.Blocks)
	}
	if c.Heads != 1 {
		t.Errorf("%d heads on a lone replica, want 1", c.Heads)
	}
}
