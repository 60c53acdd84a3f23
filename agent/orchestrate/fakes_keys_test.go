package orchestrate

import "context"

func (e *fakeEngine) Capacity(_ context.Context, m Machine) (Capacity, error) {
	if err := e.record("capacity", m, "", ""); err != nil {
		return Capacity{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.caps[m.Name], nil
}

// setCap sets what a machine's Docker reports.
func (e *fakeEngine) setCap(name string, c Capacity) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.caps == nil {
		e.caps = map[string]Capacity{}
	}
	e.caps[name] = c
}
