package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// leaveCallTimeout bounds one member's answer to a leave request.
const leaveCallTimeout = 15 * time.Second

// Leave takes this machine out of its network: it asks the other
// members, one at a time, to remove it (the removal `machine rm` runs:
// revoked keys, record deleted, gossip key rotated), and returns the
// first that accepts. A machine cannot do this itself: its own signature
// is what the removal makes void.
func (m *Members) Leave(ctx context.Context) (api.LeaveResult, error) {
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return api.LeaveResult{}, err
	}
	var errs []error
	for _, mr := range machines {
		if mr.ID == m.state.MachineID {
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, leaveCallTimeout)
		res, err := m.parts.Calls.Leave(callCtx, mr.ID)
		cancel()
		if err == nil {
			m.log.Info("leaving the network", "removed by", res.By)
			return res, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", mr.Name, err))
	}
	if len(errs) == 0 {
		return api.LeaveResult{}, fmt.Errorf("%w: this machine is the network's only member: nothing to leave (use 'uncloud uninstall --purge' to remove it)", api.ErrBadRequest)
	}
	return api.LeaveResult{}, fmt.Errorf("%w: no other member took the request: %w", api.ErrUnavailable, errors.Join(errs...))
}

// HandleLeave answers POST api.MachinePathLeave: the authenticated
// caller is removed, and only it. The answer goes first: the removal
// drops the caller as a peer, after which no answer would reach it.
func (m *Members) HandleLeave(w http.ResponseWriter, r *http.Request) {
	caller, ok := api.Caller(r.Context())
	if !ok {
		http.Error(w, "no authenticated caller", http.StatusUnauthorized)
		return
	}
	target, err := m.findMachine(r.Context(), caller)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if target.ID == m.state.MachineID {
		http.Error(w, "a machine cannot ask itself to remove it", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(api.LeaveResult{Name: target.Name, By: m.Snapshot().Name})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	m.cfg.Go(func() {
		// A moment for the answer to cross the tunnel before the peer goes.
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
		res, err := m.RemoveMachine(m.ctx, target.ID)
		if err != nil {
			m.log.Error("removal of a leaving machine", "machine", target.Name, "err", err)
			return
		}
		m.log.Info("machine left", "name", res.Name, "gossip key reached", res.Rotated, "of", res.Machines)
	})
}
