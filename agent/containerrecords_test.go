package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// countingStore counts writes, to see that unchanged records are skipped.
type countingStore struct {
	*crdt.Store
	puts int
}

func (s *countingStore) Put(ctx context.Context, key string, r crdt.Record) error {
	s.puts++
	return s.Store.Put(ctx, key, r)
}

func TestContainerRecords(t *testing.T) {
	ctx := context.Background()
	st, err := crdt.Open(ctx, crdt.Config{Dir: filepath.Join(t.TempDir(), "state"), Name: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	store := &countingStore{Store: st}
	w := &containerRecords{machineID: "m1", store: store, log: slog.New(slog.NewTextHandler(io.Discard, nil))}

	// Another machine's record, and a stale one of this machine.
	foreign := &record.Container{MachineID: "m2", ID: "abc", Name: "x"}
	stale := &record.Container{MachineID: "m1", ID: "gone0000", Name: "ghost"}
	for _, r := range []*record.Container{foreign, stale} {
		if err := st.Put(ctx, r.Key(), r); err != nil {
			t.Fatal(err)
		}
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	web := &runtime.Container{ID: "c1", Name: "web-1", Service: "web", Image: "img", Address: "10.210.1.2",
		State: "running", Health: "starting", Created: created,
		Ports: []runtime.Port{{Port: 8080, Protocol: "tcp", Name: "app.example.com"}}}
	get := func(id string) (*record.Container, error) {
		r, err := st.Get(ctx, record.ContainersPrefix+"m1/"+id)
		if err != nil {
			return nil, err
		}
		return r.(*record.Container), nil
	}

	if err := w.Containers(ctx, []*runtime.Container{web}); err != nil {
		t.Fatal(err)
	}
	want := &record.Container{MachineID: "m1", ID: "c1", Name: "web-1", Service: "web", Image: "img",
		Address: "10.210.1.2", State: "running", Health: "starting", Created: created,
		Ports: []record.ContainerPort{{Port: 8080, Protocol: "tcp", Name: "app.example.com"}}}
	if got, err := get("c1"); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("record after a full pass = %+v, %v; want %+v", got, err, want)
	}
	if _, err := get(stale.ID); !errors.Is(err, crdt.ErrNotFound) {
		t.Errorf("stale record still there: %v", err)
	}
	if _, err := st.Get(ctx, foreign.Key()); err != nil {
		t.Errorf("another machine's record was touched: %v", err)
	}

	// Reports that change nothing write nothing.
	puts := store.puts
	if err := w.Containers(ctx, []*runtime.Container{web}); err != nil {
		t.Fatal(err)
	}
	if err := w.Changed(ctx, web); err != nil {
		t.Fatal(err)
	}
	if store.puts != puts {
		t.Errorf("%d writes for unchanged containers, want 0", store.puts-puts)
	}

	// A change is written, a removal deletes.
	healthy := *web
	healthy.Health = "healthy"
	if err := w.Changed(ctx, &healthy); err != nil {
		t.Fatal(err)
	}
	if got, err := get("c1"); err != nil || got.Health != "healthy" || !got.Serves() {
		t.Errorf("record after a change = %+v, %v", got, err)
	}
	// Draining is this writer's to say, and survives the watcher's passes.
	w.drain("c1")
	if err := w.Changed(ctx, &healthy); err != nil {
		t.Fatal(err)
	}
	if err := w.Containers(ctx, []*runtime.Container{&healthy}); err != nil {
		t.Fatal(err)
	}
	if got, err := get("c1"); err != nil || !got.Draining || got.Serves() {
		t.Errorf("record of a draining container = %+v, %v; want draining, not serving", got, err)
	}
	if err := w.Removed(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := get("c1"); !errors.Is(err, crdt.ErrNotFound) {
		t.Errorf("record of a removed container still there: %v", err)
	}
	if _, err := st.Get(ctx, foreign.Key()); err != nil {
		t.Errorf("another machine's record was touched: %v", err)
	}
}
