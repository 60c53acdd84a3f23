package crdt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/uncloud-mesh/uncloud/record"
)

// ChangeType says what a Change is.
type ChangeType int

const (
	// Snapshot is one record of the current state, sent first.
	Snapshot ChangeType = iota
	// SnapshotDone ends the snapshot; every later Change is live.
	SnapshotDone
	// Updated is a record that was written (locally or by replication).
	Updated
	// Deleted is a record that went away; Record is nil.
	Deleted
	// Resync means the watcher fell too far behind: its queue was dropped
	// and a fresh Snapshot ... SnapshotDone follows. Replace your view.
	Resync
)

func (t ChangeType) String() string {
	return [...]string{"snapshot", "snapshot-done", "updated", "deleted", "resync"}[t]
}

// Change is one event of a Watch.
type Change struct {
	Type   ChangeType
	Key    string
	Record Record // nil for Deleted, SnapshotDone, Resync, or when Err is set
	Err    error  // the record could not be decoded (e.g. unknown version)
}

// maxWatchQueue is how many undelivered changes one watcher may accumulate
// before it is resynced (its queue replaced by a snapshot, which is bounded
// by the number of records). Replication never waits for a watcher.
const maxWatchQueue = 50_000

// recheckDelay: go-ds-crdt calls its put hook before the batch holding the
// value commits, and its hooks may interleave across DAG workers, so every
// key touched by a hook is read back once more after this delay; a value
// that differs from what watchers saw is emitted then.
const recheckDelay = 250 * time.Millisecond

// watchHub turns go-ds-crdt's hooks into ordered per-watcher change streams.
//
// The hooks only record the key in a dirty set (they run inside replication
// and must not block). One dispatcher goroutine resolves dirty keys to their
// current values and compares them with a mirror of what watchers have been
// told; differences become Changes, appended to each matching watcher's
// unbounded queue under the same lock as the mirror update. Watch takes its
// snapshot from the mirror under that lock too, so no change can fall
// between snapshot and subscription, and per key the order is the
// dispatcher's order.
type watchHub struct {
	s   *Store
	st  *counters
	log *slog.Logger

	maxQueue int // maxWatchQueue; tests lower it

	mu       sync.Mutex
	mirror   map[string][]byte
	watchers map[*watcher]struct{}

	dirtyMu  sync.Mutex
	dirty    map[string]hookEvent
	reverify bool // every key must be checked again: the trust view changed
	signal   chan struct{}

	ready chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup
}

type hookEvent struct {
	put   bool
	value []byte
}

func newWatchHub(s *Store, st *counters, log *slog.Logger) *watchHub {
	return &watchHub{
		s: s, st: st, log: log, maxQueue: maxWatchQueue,
		mirror:   map[string][]byte{},
		watchers: map[*watcher]struct{}{},
		dirty:    map[string]hookEvent{},
		signal:   make(chan struct{}, 1),
		ready:    make(chan struct{}),
		stop:     make(chan struct{}),
	}
}

func (h *watchHub) putHook(k ds.Key, v []byte) {
	h.mark(k.String(), hookEvent{put: true, value: bytes.Clone(v)})
}

func (h *watchHub) deleteHook(k ds.Key) {
	// The element may survive (another version, or a concurrent re-add):
	// the dispatcher reads the current value.
	h.mark(k.String(), hookEvent{})
}

func (h *watchHub) mark(key string, ev hookEvent) {
	h.dirtyMu.Lock()
	h.dirty[key] = ev
	h.dirtyMu.Unlock()
	select {
	case h.signal <- struct{}{}:
	default:
	}
}

// start loads the mirror and starts the dispatcher.
func (h *watchHub) start(ctx context.Context) error {
	all, err := h.s.queryRaw(ctx, "/")
	if err != nil {
		return fmt.Errorf("load watch mirror: %w", err)
	}
	// The first check of each record verifies a signature (~70 µs): spread
	// them over the cores, or a large state holds up the start.
	visible := make([]bool, len(all))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(all)/256))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(all); i += workers {
				visible[i] = h.visible(all[i].Key, all[i].Value)
			}
		})
	}
	wg.Wait()
	h.mu.Lock()
	for i, e := range all {
		if visible[i] {
			h.mirror[e.Key] = e.Value
		}
	}
	h.mu.Unlock()
	close(h.ready)
	h.wg.Add(1)
	go h.dispatch()
	return nil
}

func (h *watchHub) close() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.wg.Wait()
}

func (h *watchHub) dispatch() {
	defer h.wg.Done()
	recheck := map[string]time.Time{}
	// The tick runs only while rechecks are due: an idle store must not
	// wake the process eight times a second.
	tick := time.NewTicker(recheckDelay / 2)
	tick.Stop()
	ctx := context.Background()
	for {
		select {
		case <-h.stop:
			return
		case <-h.signal:
			if len(recheck) == 0 {
				tick.Reset(recheckDelay / 2)
			}
			h.dirtyMu.Lock()
			batch, reverify := h.dirty, h.reverify
			h.dirty, h.reverify = map[string]hookEvent{}, false
			h.dirtyMu.Unlock()
			// Machine and revocation records decide what else is
			// believed: the trust view is brought up to date before
			// anything of the batch is applied, and a change of it
			// re-checks every key.
			for k := range batch {
				if strings.HasPrefix(k, record.MachinesPrefix) || strings.HasPrefix(k, record.RevokedPrefix) {
					if h.s.refreshTrust(ctx) {
						reverify = true
					}
					break
				}
			}
			if reverify {
				h.addAllKeys(ctx, batch)
			}
			keys := make([]string, 0, len(batch))
			for k := range batch {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			due := time.Now().Add(recheckDelay)
			for _, k := range keys {
				ev := batch[k]
				v := ev.value
				if !ev.put {
					v = h.current(ctx, k)
				}
				h.apply(k, v)
				recheck[k] = due
			}
		case now := <-tick.C:
			var keys []string
			for k, due := range recheck {
				if now.After(due) {
					delete(recheck, k)
					keys = append(keys, k)
				}
			}
			// The hook came before its batch committed, so the trust view
			// built then may have missed a machine record (a machine that
			// just joined): its own record, and everything it signs, would
			// be refused until some other machine record changed. Build the
			// view again now the value is readable, and re-check every key
			// if it changed.
			reverify := false
			for _, k := range keys {
				if strings.HasPrefix(k, record.MachinesPrefix) || strings.HasPrefix(k, record.RevokedPrefix) {
					reverify = h.s.refreshTrust(ctx)
					break
				}
			}
			if reverify {
				all := map[string]hookEvent{}
				for _, k := range keys {
					all[k] = hookEvent{}
				}
				h.addAllKeys(ctx, all)
				keys = slices.Sorted(maps.Keys(all))
			}
			for _, k := range keys {
				h.apply(k, h.current(ctx, k))
			}
			if len(recheck) == 0 {
				tick.Stop()
			}
		}
	}
}

// reverifyAll asks the dispatcher to check every key again.
func (h *watchHub) reverifyAll() {
	h.dirtyMu.Lock()
	h.reverify = true
	h.dirtyMu.Unlock()
	select {
	case h.signal <- struct{}{}:
	default:
	}
}

// addAllKeys adds every stored key and every key watchers know to batch,
// to be read afresh.
func (h *watchHub) addAllKeys(ctx context.Context, batch map[string]hookEvent) {
	all, err := h.s.queryRaw(ctx, "/")
	if err != nil {
		h.log.Warn("re-check records after a trust change", "err", err)
	}
	for _, e := range all {
		batch[e.Key] = hookEvent{}
	}
	h.mu.Lock()
	for k := range h.mirror {
		batch[k] = hookEvent{}
	}
	h.mu.Unlock()
}

// visible says whether watchers may see the value: false for a record
// the store's Verifier refuses. Undecodable values stay visible, as
// changes with Err set.
func (h *watchHub) visible(key string, v []byte) bool {
	if h.s.trust == nil {
		return true
	}
	_, err := h.s.accept(key, v)
	return !errors.Is(err, ErrUnverified)
}

// current reads key's value; nil when absent.
func (h *watchHub) current(ctx context.Context, key string) []byte {
	v, err := h.s.getRaw(ctx, key)
	if err != nil {
		return nil
	}
	return v
}

// apply records key's value and tells the watchers if it changed.
func (h *watchHub) apply(key string, v []byte) {
	if v != nil && !h.visible(key, v) {
		v = nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old, had := h.mirror[key]
	var ch Change
	switch {
	case v == nil && !had:
		return
	case v == nil:
		delete(h.mirror, key)
		ch = Change{Type: Deleted, Key: key}
	case had && bytes.Equal(old, v):
		return
	default:
		h.mirror[key] = v
		ch = Change{Type: Updated, Key: key}
		ch.Record, ch.Err = decodeRecord(key, v)
	}
	for w := range h.watchers {
		if strings.HasPrefix(key, w.prefix) {
			w.push(ch)
		}
	}
}

// snapshotLocked returns the mirror's records under prefix as changes,
// followed by SnapshotDone. h.mu must be held.
func (h *watchHub) snapshotLocked(prefix string) []Change {
	var keys []string
	for k := range h.mirror {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]Change, 0, len(keys)+1)
	for _, k := range keys {
		ch := Change{Type: Snapshot, Key: k}
		ch.Record, ch.Err = decodeRecord(k, h.mirror[k])
		out = append(out, ch)
	}
	return append(out, Change{Type: SnapshotDone})
}

// watcher is one Watch: an unbounded queue drained by its own goroutine.
type watcher struct {
	prefix   string
	maxQueue int
	mu       sync.Mutex
	queue    []Change
	resync   bool
	signal   chan struct{}
}

// push appends ch; h.mu is held by the caller.
func (w *watcher) push(ch Change) {
	w.mu.Lock()
	if len(w.queue) >= w.maxQueue {
		w.queue = nil
		w.resync = true
	} else if !w.resync {
		w.queue = append(w.queue, ch)
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// Watch streams the records under prefix: first the current ones (Snapshot,
// then SnapshotDone), then every change (Updated, Deleted) in the order this
// replica applied them. The channel closes when ctx ends or the store
// closes. A watcher that falls behind by more than 50,000 changes gets
// Resync and a fresh snapshot instead of blocking replication.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan Change, error) {
	if !strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("watch %q: %w: prefix must start with /", prefix, record.ErrBadKey)
	}
	h := s.watch
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	w := &watcher{prefix: prefix, maxQueue: h.maxQueue, signal: make(chan struct{}, 1)}
	h.mu.Lock()
	w.queue = h.snapshotLocked(prefix)
	h.watchers[w] = struct{}{}
	h.mu.Unlock()

	out := make(chan Change, 64)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(out)
		defer func() {
			h.mu.Lock()
			delete(h.watchers, w)
			h.mu.Unlock()
		}()
		for {
			w.mu.Lock()
			resync := w.resync
			w.mu.Unlock()
			if resync {
				h.st.watchResyncs.Add(1)
				h.mu.Lock() // no apply can run: the snapshot is exact
				snap := h.snapshotLocked(prefix)
				w.mu.Lock()
				w.resync = false
				w.queue = append([]Change{{Type: Resync}}, snap...)
				w.mu.Unlock()
				h.mu.Unlock()
			}
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()
			for i, ch := range batch {
				select {
				case out <- ch:
				case <-ctx.Done():
					return
				case <-h.stop:
					return
				}
				// A resync requested while we deliver drops the rest.
				if i%256 == 255 {
					w.mu.Lock()
					r := w.resync
					w.mu.Unlock()
					if r {
						break
					}
				}
			}
			if len(batch) > 0 {
				continue
			}
			select {
			case <-w.signal:
			case <-ctx.Done():
				return
			case <-h.stop:
				return
			}
		}
	}()
	return out, nil
}
