package agent

import (
	"errors"
	"slices"
	"testing"
)

func TestLifecycleOrder(t *testing.T) {
	var l lifecycle
	var got []string
	step := func(name string, err error) func() error {
		return func() error { got = append(got, name); return err }
	}
	boom := errors.New("store: disk gone")
	l.closeLast(step("device", nil))
	l.stopAccepting(step("machine API", nil))
	l.closeLast(step("gossip", nil))
	l.closeLast(step("store", boom))
	l.stopAccepting(step("local API", nil))

	err := l.shutdown(func() { got = append(got, "cancel") }, func() { got = append(got, "wait") })
	want := []string{"machine API", "local API", "cancel", "wait", "store", "gossip", "device"}
	if !slices.Equal(got, want) {
		t.Fatalf("shutdown order %q, want %q", got, want)
	}
	if !errors.Is(err, boom) {
		t.Fatalf("shutdown error %v, want the store's", err)
	}

	// A second Close does nothing and reports the same.
	got = nil
	if err2 := l.shutdown(func() { got = append(got, "cancel") }, func() {}); !errors.Is(err2, boom) || len(got) != 0 {
		t.Fatalf("second shutdown ran %q and returned %v", got, err2)
	}
}
