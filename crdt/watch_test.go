package crdt

import (
	"context"
	"fmt"
	"github.com/uncloud-mesh/uncloud/record"
	"strconv"
	"testing"
	"time"
)

// TestWatchSnapshotThenChanges: the snapshot first, then every change, in
// order per key, for local and replicated writes, with writes racing the
// subscription.
func TestWatchSnapshotThenChanges(t *testing.T) {
	c := newTestCluster(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m1, m2 := c.s("m1"), c.s("m2")
	for _, name := range []string{"a", "b", "c"} {
		mustPut(t, m1, &record.Service{Name: name, Mode: "0"})
	}
	mustPut(t, m1, &record.Machine{ID: "m1", Name: "not watched"})
	c.waitConverged(5 * time.Second)

	// Writers race the Watch call: nothing may fall in between.
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			mustPut(t, m1, &record.Service{Name: "a", Mode: strconv.Itoa(i)}) // local
			mustPut(t, m2, &record.Service{Name: "b", Mode: strconv.Itoa(i)}) // replicated
		}
		if err := m1.Delete(context.Background(), "/services/c"); err != nil {
			t.Error(err)
		}
	}()
	ch, err := m1.Watch(ctx, "/services/")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	view := map[string]string{}
	snapshotDone := false
	timeout := time.After(15 * time.Second)
	for {
		var ev Change
		select {
		case ev = <-ch:
		case <-timeout:
			t.Fatalf("watch never reached the final state: %v", view)
		}
		switch ev.Type {
		case Snapshot, Updated:
			if ev.Type == Snapshot && snapshotDone {
				t.Fatalf("snapshot entry after SnapshotDone")
			}
			if ev.Type == Updated && !snapshotDone {
				t.Fatalf("update before SnapshotDone")
			}
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			s := ev.Record.(*record.Service)
			v, _ := strconv.Atoi(s.Mode)
			if prev, ok := last[ev.Key]; ok && v <= prev {
				t.Fatalf("%s went from %d to %d: out of order", ev.Key, prev, v)
			}
			last[ev.Key] = v
			view[ev.Key] = s.Mode
		case SnapshotDone:
			snapshotDone = true
		case Deleted:
			delete(view, ev.Key)
		default:
			t.Fatalf("unexpected %v", ev.Type)
		}
		if _, isMachine := view["/machines/m1"]; isMachine {
			t.Fatal("watch leaked a key outside its prefix")
		}
		want := fmt.Sprint(n)
		if snapshotDone && view["/services/a"] == want && view["/services/b"] == want && len(view) == 2 {
			break
		}
	}
	<-done
}

// TestWatchSlowWatcherResyncs: a watcher that does not read never blocks
// writes; it gets Resync and a snapshot that equals the store.
func TestWatchSlowWatcherResyncs(t *testing.T) {
	s := openOffline(t)
	s.watch.maxQueue = 50
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 500 {
		mustPut(t, s, &record.Container{MachineID: "m", ID: fmt.Sprintf("c%03d", i), Name: "x"})
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("writes took %s with a stuck watcher", d)
	}
	time.Sleep(2 * recheckDelay)
	view := map[string]bool{}
	resynced := false
	deadline := time.After(10 * time.Second)
	for len(view) != 500 || !resynced {
		select {
		case ev := <-ch:
			switch ev.Type {
			case Resync:
				resynced = true
				clear(view)
			case Snapshot, Updated:
				view[ev.Key] = true
			}
		case <-deadline:
			t.Fatalf("resynced=%v, view has %d of 500", resynced, len(view))
		}
	}
	if s.Stats().WatchResyncs == 0 {
		t.Error("resync not counted")
	}
}
