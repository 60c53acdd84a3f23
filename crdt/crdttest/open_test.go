package crdttest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/record"
)

func TestOpenAlone(t *testing.T) {
	ctx := context.Background()
	s := Open(t, "m1")
	svc := &record.Service{Name: "web"}
	if err := s.Put(ctx, svc.Key(), svc); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, svc.Key())
	if err != nil || got.(*record.Service).Name != "web" {
		t.Fatalf("Get after Put: %v, %v", got, err)
	}
}

func TestReplicasOnAHub(t *testing.T) {
	ctx := context.Background()
	c := NewCluster(t)
	a, b := c.Replica("m1"), c.Replica("m2")
	svc := &record.Service{Name: "web"}
	if err := a.Put(ctx, svc.Key(), svc); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "m1's record on m2", 10*time.Second, func() error {
		got, err := b.Get(ctx, svc.Key())
		if err != nil {
			return err
		}
		if got.(*record.Service).Name != "web" {
			return errors.New("another record")
		}
		return nil
	})
}

// TestCloseTwice: every long-running part's Close is safe to call again
// (the daemon's shutdown and a deferred cleanup may both close it).
func TestCloseTwice(t *testing.T) {
	s := Open(t, "m1")
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
