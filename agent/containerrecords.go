package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// containerStore is the part of the state containerRecords writes;
// crdt.Store implements it.
type containerStore interface {
	Get(ctx context.Context, key string) (crdt.Record, error)
	Put(ctx context.Context, key string, r crdt.Record) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]crdt.Record, error)
}

// containerRecords keeps this machine's container records true to what
// the runtime reports (it is the runtime's Observer). It writes and
// deletes only under /containers/<this machine>/: a machine owns its
// container records (DESIGN §6).
type containerRecords struct {
	machineID string
	store     containerStore
	log       *slog.Logger

	mu sync.Mutex
	// draining are the containers a rollout removes next, by ID: their
	// records say so, and the routes leave them. Kept in memory only: the
	// removal follows within seconds, and an agent restarted meanwhile
	// lets the container serve again until then, which is safe.
	draining map[string]bool
}

// drain marks container id (a full ID) draining in its next record.
func (w *containerRecords) drain(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.draining == nil {
		w.draining = map[string]bool{}
	}
	w.draining[id] = true
}

// record is containerRecord with what only this writer knows.
func (w *containerRecords) record(c *runtime.Container) *record.Container {
	rec := containerRecord(w.machineID, c)
	w.mu.Lock()
	rec.Draining = w.draining[c.ID]
	w.mu.Unlock()
	return rec
}

// containerRecord is the state record of a container of machine machineID.
func containerRecord(machineID string, c *runtime.Container) *record.Container {
	rec := &record.Container{
		MachineID:   machineID,
		ID:          c.ID,
		Name:        c.Name,
		Service:     c.Service,
		Image:       c.Image,
		ImageDigest: c.ImageDigest,
		Address:     c.Address,
		State:       c.State,
		Health:      c.Health,
		Created:     c.Created,
	}
	for _, p := range c.Ports {
		rec.Ports = append(rec.Ports, record.ContainerPort{Port: p.Port, Protocol: p.Protocol, Name: p.Name})
	}
	return rec
}

func (w *containerRecords) prefix() string { return record.ContainersPrefix + w.machineID + "/" }

// Containers writes a record for each container that is missing or
// outdated, and deletes the records of containers that are gone.
func (w *containerRecords) Containers(ctx context.Context, live []*runtime.Container) error {
	stored, err := w.store.List(ctx, w.prefix())
	if err != nil {
		return fmt.Errorf("list container records under %s: %w", w.prefix(), err)
	}
	have := map[string]*record.Container{}
	for _, s := range stored {
		if c, ok := s.(*record.Container); ok {
			have[c.ID] = c
		}
	}
	for _, c := range live {
		if err := w.putIfChanged(ctx, have[c.ID], w.record(c)); err != nil {
			return err
		}
		delete(have, c.ID)
	}
	for _, gone := range have {
		if err := w.store.Delete(ctx, gone.Key()); err != nil {
			return fmt.Errorf("delete record of gone container %s: %w", gone.Name, err)
		}
		w.log.Info("container gone", "name", gone.Name, "id", runtime.ShortID(gone.ID))
	}
	return nil
}

// Changed brings one container's record up to date.
func (w *containerRecords) Changed(ctx context.Context, c *runtime.Container) error {
	cur := w.record(c)
	var old *record.Container
	r, err := w.store.Get(ctx, cur.Key())
	switch {
	case err == nil:
		old, _ = r.(*record.Container)
	case !errors.Is(err, crdt.ErrNotFound):
		// Unreadable (e.g. a newer version): overwrite it with what is true.
		w.log.Warn("container record unreadable; rewriting it", "key", cur.Key(), "err", err)
	}
	return w.putIfChanged(ctx, old, cur)
}

// Removed deletes the record of a container that no longer exists.
func (w *containerRecords) Removed(ctx context.Context, idOrName string) error {
	w.mu.Lock()
	delete(w.draining, idOrName)
	w.mu.Unlock()
	return w.store.Delete(ctx, w.prefix()+idOrName)
}

// putIfChanged writes only real changes: the state's history never
// shrinks, so an unchanged record is not written again.
func (w *containerRecords) putIfChanged(ctx context.Context, old, cur *record.Container) error {
	if old != nil && reflect.DeepEqual(old, cur) {
		return nil
	}
	if err := w.store.Put(ctx, cur.Key(), cur); err != nil {
		return fmt.Errorf("write record of container %s: %w", cur.Name, err)
	}
	return nil
}
