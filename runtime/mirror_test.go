package runtime

import (
	"context"
	"sync"
)

// mirror is an Observer that applies reports the way the agent applies
// them to the state: a full list replaces what was known, a change
// overwrites one container, a removal forgets it.
type mirror struct {
	mu   sync.Mutex
	byID map[string]*Container
}

func newMirror(known ...*Container) *mirror {
	m := &mirror{byID: map[string]*Container{}}
	for _, c := range known {
		m.byID[c.ID] = c
	}
	return m
}

func (m *mirror) Containers(_ context.Context, all []*Container) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byID = make(map[string]*Container, len(all))
	for _, c := range all {
		m.byID[c.ID] = c
	}
	return nil
}

func (m *mirror) Changed(_ context.Context, c *Container) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byID[c.ID] = c
	return nil
}

func (m *mirror) Removed(_ context.Context, idOrName string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byID, idOrName)
	return nil
}

func (m *mirror) get(id string) (*Container, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.byID[id]
	return c, ok
}

func (m *mirror) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}
