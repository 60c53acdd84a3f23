package resolver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// Watcher is the part of the replicated state the index follows;
// *crdt.Store implements it.
type Watcher interface {
	Watch(ctx context.Context, prefix string) (<-chan crdt.Change, error)
}

// Reachability is this machine's view of which machines it can reach now.
// The agent implements it from gossip and WireGuard.
type Reachability interface {
	Reachable(machineID string) bool
	// Changed receives a value whenever Reachable may answer differently.
	Changed() <-chan struct{}
}

// settle is how long the index waits after a change for more changes
// before it recompiles the zone: a burst of replicated records (a
// partition heals) costs one rebuild, not hundreds.
const settle = 20 * time.Millisecond

// Index keeps the records the zone is built from, follows their changes
// and recompiles the zone when they or the reachability change. Queries
// read the compiled zone only.
type Index struct {
	self  string
	reach Reachability
	log   *slog.Logger

	mu         sync.Mutex
	machines   map[string]*record.Machine   // by key
	containers map[string]*record.Container // by key
	services   map[string]*record.Service   // by key
	serial     uint32
	skipped    map[string]bool // already logged

	zone  atomic.Pointer[zone]
	dirty chan struct{}
	ready chan struct{}
}

// NewIndex makes an empty index for the machine self; reach may be nil
// (every machine is reachable), e.g. in tests.
func NewIndex(self string, reach Reachability, log *slog.Logger) *Index {
	if log == nil {
		log = slog.Default()
	}
	x := &Index{self: self, reach: reach, log: log,
		machines: map[string]*record.Machine{}, containers: map[string]*record.Container{},
		services: map[string]*record.Service{}, skipped: map[string]bool{},
		dirty: make(chan struct{}, 1), ready: make(chan struct{})}
	x.rebuild()
	return x
}

// Ready is closed once the index has built the zone from a full snapshot
// of the state.
func (x *Index) Ready() <-chan struct{} { return x.ready }

// Run follows the machines, containers and services in w until ctx ends,
// and recompiles the zone after changes. It returns ctx's error, or the
// error that stopped a watch from starting.
func (x *Index) Run(ctx context.Context, w Watcher) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prefixes := []string{record.MachinesPrefix, record.ContainersPrefix, record.ServicesPrefix}
	var pending sync.WaitGroup // snapshots not yet complete
	var wg sync.WaitGroup
	errs := make(chan error, len(prefixes))
	for _, p := range prefixes {
		ch, err := w.Watch(ctx, p)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("resolver: watch %s: %w", p, err)
		}
		pending.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- x.follow(ctx, p, ch, pending.Done)
		}()
	}
	snapshots := make(chan struct{})
	go func() { pending.Wait(); close(snapshots) }()

	var changed <-chan struct{}
	if x.reach != nil {
		changed = x.reach.Changed()
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	ready := false
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		case err := <-errs:
			if ctx.Err() == nil {
				// The store closed under us: nothing more will come.
				cancel()
				wg.Wait()
				return err
			}
		case <-snapshots:
			snapshots = nil
			x.rebuild()
			ready = true
			close(x.ready)
		case <-x.dirty:
			if ready && !armed {
				timer.Reset(settle)
				armed = true
			}
		case <-changed:
			if ready && !armed {
				timer.Reset(settle)
				armed = true
			}
		case <-timer.C:
			armed = false
			x.rebuild()
		}
	}
}

// follow applies one watch's changes to the record maps.
func (x *Index) follow(ctx context.Context, prefix string, ch <-chan crdt.Change, snapshotDone func()) error {
	var fresh map[string]crdt.Record // being rebuilt after a Resync
	once := sync.OnceFunc(snapshotDone)
	defer once()
	for {
		var c crdt.Change
		var ok bool
		select {
		case c, ok = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return fmt.Errorf("resolver: watch %s ended: the store closed", prefix)
		}
		switch c.Type {
		case crdt.Resync:
			fresh = map[string]crdt.Record{}
		case crdt.Snapshot:
			if fresh != nil && c.Record != nil {
				fresh[c.Key] = c.Record
				continue
			}
			x.set(c.Key, c.Record)
		case crdt.SnapshotDone:
			if fresh != nil {
				x.replace(prefix, fresh)
				fresh = nil
			}
			once()
		case crdt.Updated:
			x.set(c.Key, c.Record) // a record this binary cannot decode counts as absent
		case crdt.Deleted:
			x.set(c.Key, nil)
		}
	}
}

// set stores or (with r nil) removes the record at key.
func (x *Index) set(key string, r crdt.Record) {
	x.mu.Lock()
	delete(x.machines, key)
	delete(x.containers, key)
	delete(x.services, key)
	switch r := r.(type) {
	case *record.Machine:
		x.machines[key] = r
	case *record.Container:
		x.containers[key] = r
	case *record.Service:
		x.services[key] = r
	}
	x.mu.Unlock()
	x.poke()
}

// replace swaps every record under prefix for the fresh snapshot.
func (x *Index) replace(prefix string, fresh map[string]crdt.Record) {
	x.mu.Lock()
	for k := range x.machines {
		if strings.HasPrefix(k, prefix) {
			delete(x.machines, k)
		}
	}
	for k := range x.containers {
		if strings.HasPrefix(k, prefix) {
			delete(x.containers, k)
		}
	}
	for k := range x.services {
		if strings.HasPrefix(k, prefix) {
			delete(x.services, k)
		}
	}
	x.mu.Unlock()
	for k, r := range fresh {
		x.set(k, r)
	}
}

func (x *Index) poke() {
	select {
	case x.dirty <- struct{}{}:
	default:
	}
}

// rebuild compiles a new zone from the records and swaps it in.
func (x *Index) rebuild() {
	x.mu.Lock()
	x.serial++
	in := Input{Self: x.self, Serial: x.serial}
	for _, m := range x.machines {
		in.Machines = append(in.Machines, m)
	}
	for _, c := range x.containers {
		in.Containers = append(in.Containers, c)
	}
	for _, s := range x.services {
		in.Services = append(in.Services, s)
	}
	if x.reach != nil {
		in.Reachable = x.reach.Reachable
	}
	x.mu.Unlock()
	z, skipped := build(in)
	x.zone.Store(z)
	for _, s := range skipped {
		x.mu.Lock()
		seen := x.skipped[s]
		x.skipped[s] = true
		x.mu.Unlock()
		if !seen {
			x.log.Warn("resolver: record left out of DNS", "reason", s)
		}
	}
}

// Names lists what this machine answers now, sorted by name and type.
func (x *Index) Names() []Name {
	return x.zone.Load().names
}
