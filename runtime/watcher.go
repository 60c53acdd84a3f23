package runtime

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Records is the part of the replicated state the watcher writes:
// crdt.Store implements it.
type Records interface {
	Put(ctx context.Context, key string, r crdt.Record) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]crdt.Record, error)
}

// WatchOptions tune the watcher.
type WatchOptions struct {
	// Resync is how often everything is re-checked even without events:
	// the network, the firewall rules and every record (default 30 s).
	Resync time.Duration
	// Ready, if set, is called after each successful full pass.
	Ready func()
	// Failed, if set, is called when Docker cannot be reached or set up;
	// the watcher keeps retrying.
	Failed func(error)
}

// Setup makes the machine's network and firewall rules right: the Docker
// network, then the rules (which need the bridge interface to exist to
// mean anything, though iptables accepts them either way).
func (r *Runtime) Setup(ctx context.Context) error {
	if err := r.Connect(ctx); err != nil {
		return err
	}
	if err := r.EnsureNetwork(ctx, r.cfg.Subnet.Prefix(), r.cfg.MTU); err != nil {
		return err
	}
	if err := r.fw.Apply(ctx, r.Rules()); err != nil {
		return fmt.Errorf("host rules for %s: %w", r.cfg.Bridge, err)
	}
	return nil
}

// Rules are the host rules of this machine's bridge.
func (r *Runtime) Rules() Rules {
	return Rules{Subnet: r.cfg.Subnet.Prefix(), Mesh: meshaddr.Mesh(), Bridge: r.cfg.Bridge, Tag: r.cfg.ChainTag,
		MeshInterface: r.cfg.MeshInterface, MTU: r.cfg.MTU}
}

// RemoveRules takes out the host rules the runtime added.
func (r *Runtime) RemoveRules(ctx context.Context) error { return r.fw.Remove(ctx, r.Rules()) }

// Watch keeps the machine set up and its container records true until ctx
// ends: a full pass at start, then Docker events, a full pass whenever
// the event stream comes back (Docker restarted: its network and rules
// may be gone), and one every Resync. Only this machine's records are
// written or deleted.
func (r *Runtime) Watch(ctx context.Context, recs Records, o WatchOptions) {
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := r.watchOnce(ctx, recs, o)
		if time.Since(start) > time.Minute {
			backoff = time.Second // it worked for a while: retry soon
		}
		if ctx.Err() != nil {
			return
		}
		if o.Failed != nil {
			o.Failed(err)
		}
		r.log.Warn("docker watch interrupted; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (r *Runtime) watchOnce(ctx context.Context, recs Records, o WatchOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe before the full pass, so nothing between them is missed.
	msgs, errs := r.docker.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", LabelMachine+"="+r.cfg.MachineID))})
	if err := r.fullPass(ctx, recs); err != nil {
		return err
	}
	if o.Ready != nil {
		o.Ready()
	}
	tick := time.NewTicker(o.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream ended")
			}
			return err
		case m := <-msgs:
			if err := r.syncOne(ctx, recs, m.Actor.ID); err != nil {
				r.log.Warn("container record not updated", "container", m.Actor.ID, "event", m.Action, "err", err)
			}
		case <-tick.C:
			if err := r.fullPass(ctx, recs); err != nil {
				return err
			}
			if o.Ready != nil {
				o.Ready()
			}
		}
	}
}

// fullPass sets the machine up and makes the records match Docker.
func (r *Runtime) fullPass(ctx context.Context, recs Records) error {
	if err := r.Setup(ctx); err != nil {
		return err
	}
	return r.SyncRecords(ctx, recs)
}

// SyncRecords writes a record for each of this machine's containers that
// is missing or outdated, and deletes the records of containers that are
// gone.
func (r *Runtime) SyncRecords(ctx context.Context, recs Records) error {
	live, err := r.List(ctx)
	if err != nil {
		return err
	}
	prefix := crdt.ContainersPrefix + r.cfg.MachineID + "/"
	stored, err := recs.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("list container records: %w", err)
	}
	have := map[string]*crdt.Container{}
	for _, s := range stored {
		if c, ok := s.(*crdt.Container); ok {
			have[c.ID] = c
		}
	}
	for _, c := range live {
		if err := putIfChanged(ctx, recs, have[c.ID], c); err != nil {
			return err
		}
		delete(have, c.ID)
	}
	for _, gone := range have {
		if err := recs.Delete(ctx, gone.Key()); err != nil {
			return fmt.Errorf("delete record of gone container %s: %w", gone.Name, err)
		}
		r.log.Info("container gone", "name", gone.Name, "id", short(gone.ID))
	}
	return nil
}

// SyncContainer brings one container's record up to date now (after the
// agent created, stopped or removed it), instead of waiting for its event.
func (r *Runtime) SyncContainer(ctx context.Context, recs Records, id string) error {
	return r.syncOne(ctx, recs, id)
}

// syncOne brings one container's record up to date after an event.
func (r *Runtime) syncOne(ctx context.Context, recs Records, id string) error {
	key := crdt.ContainersPrefix + r.cfg.MachineID + "/" + id
	c, err := r.Inspect(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return recs.Delete(ctx, key)
	}
	if err != nil {
		return err
	}
	var old *crdt.Container
	if cur, err := getContainer(ctx, recs, key); err == nil {
		old = cur
	}
	return putIfChanged(ctx, recs, old, c)
}

func getContainer(ctx context.Context, recs Records, key string) (*crdt.Container, error) {
	list, err := recs.List(ctx, key)
	if err != nil {
		return nil, err
	}
	for _, l := range list {
		if c, ok := l.(*crdt.Container); ok && c.Key() == key {
			return c, nil
		}
	}
	return nil, crdt.ErrNotFound
}

// putIfChanged writes only real changes: the state's history never
// shrinks, so an unchanged record is not written again.
func putIfChanged(ctx context.Context, recs Records, old, cur *crdt.Container) error {
	if old != nil && reflect.DeepEqual(old, cur) {
		return nil
	}
	if err := recs.Put(ctx, cur.Key(), cur); err != nil {
		return fmt.Errorf("write record of container %s: %w", cur.Name, err)
	}
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
