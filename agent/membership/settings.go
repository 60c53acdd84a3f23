package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

// KnownRoles are the roles a machine can take besides running containers.
var knownRoles = []string{"ingress"}

// UpdateMachine implements api.Backend's: rename a machine or change its
// roles. A machine record is written by its machine alone (two writers
// would race in the CRDT), so for another machine the change is a call to
// that machine, which must be reachable.
func (m *Members) UpdateMachine(ctx context.Context, nameOrID string, u api.MachineUpdate) (api.MachineInfo, error) {
	if err := checkUpdate(u); err != nil {
		return api.MachineInfo{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	target, err := m.findMachine(ctx, nameOrID)
	if err != nil {
		return api.MachineInfo{}, err
	}
	if target.ID == m.state.MachineID {
		rec, err := m.updateSelf(ctx, u)
		if err != nil {
			return api.MachineInfo{}, err
		}
		return machineInfoOf(rec), nil
	}
	rec, err := m.parts.Calls.UpdateSelf(ctx, target.ID, u)
	if err != nil {
		var re *api.StatusError
		if errors.As(err, &re) && re.Status == http.StatusConflict {
			return api.MachineInfo{}, fmt.Errorf("%w: %s", api.ErrConflict, re.Message)
		}
		if errors.As(err, &re) && re.Status == http.StatusBadRequest {
			return api.MachineInfo{}, fmt.Errorf("%w: %s", api.ErrBadRequest, re.Message)
		}
		return api.MachineInfo{}, fmt.Errorf("%w: %s must make this change itself and did not answer: %v", api.ErrUnavailable, target.Name, err)
	}
	return machineInfoOf(rec), nil
}

func machineInfoOf(m *record.Machine) api.MachineInfo {
	info := api.MachineInfo{ID: m.ID, Name: m.Name, Subnet: m.Subnet, Roles: m.Roles, Labels: m.Labels}
	if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil {
		info.Address = n.MachineAddr().String()
	}
	return info
}

func checkUpdate(u api.MachineUpdate) error {
	if u.Name == "" && len(u.AddRoles) == 0 && len(u.RemoveRoles) == 0 && len(u.SetLabels) == 0 && len(u.RemoveLabels) == 0 {
		return errors.New("nothing to change: give a new name, roles or labels to add or remove")
	}
	if err := checkLabels(u.SetLabels, u.RemoveLabels); err != nil {
		return err
	}
	if u.Name != "" {
		if err := ValidateName(u.Name); err != nil {
			return err
		}
	}
	for _, r := range append(slices.Clone(u.AddRoles), u.RemoveRoles...) {
		if !slices.Contains(knownRoles, r) {
			return fmt.Errorf("unknown role %q: known roles are %s", r, strings.Join(knownRoles, ", "))
		}
	}
	return nil
}

// findMachine finds a non-revoked machine by name or ID.
func (m *Members) findMachine(ctx context.Context, nameOrID string) (*record.Machine, error) {
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, mr := range machines {
		if mr.Name == nameOrID || mr.ID == nameOrID {
			return mr, nil
		}
	}
	return nil, fmt.Errorf("%w: no machine named %q (see 'uncloud machine ls')", api.ErrNotFound, nameOrID)
}

// updateSelf applies a change to this machine: saved in machine.json,
// then published in its record.
func (m *Members) updateSelf(ctx context.Context, u api.MachineUpdate) (*record.Machine, error) {
	if err := checkUpdate(u); err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if u.Name != "" {
		machines, err := m.MachineRecords(ctx)
		if err != nil {
			return nil, err
		}
		for _, mr := range machines {
			if mr.Name == u.Name && mr.ID != m.state.MachineID {
				return nil, fmt.Errorf("%w: machine name %q is taken by %s", api.ErrConflict, u.Name, mr.ID)
			}
		}
	}
	old := m.Snapshot()
	st, err := m.UpdateState(func(s *MachineState) error {
		if u.Name != "" {
			s.Name = u.Name
		}
		for _, r := range u.AddRoles {
			if !slices.Contains(s.Roles, r) {
				s.Roles = append(s.Roles, r)
			}
		}
		s.Roles = slices.DeleteFunc(s.Roles, func(r string) bool { return slices.Contains(u.RemoveRoles, r) })
		slices.Sort(s.Roles)
		s.Labels = changeLabels(s.Labels, u.SetLabels, u.RemoveLabels)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := m.Publish(ctx); err != nil {
		return nil, err
	}
	m.log.Info("machine updated", "name", st.Name, "was", old.Name, "roles", st.Roles, "labels", st.Labels)
	rec, err := m.parts.Records.Get(ctx, record.MachinesPrefix+m.state.MachineID)
	if err != nil {
		return nil, fmt.Errorf("read back own record: %w", err)
	}
	return rec.(*record.Machine), nil
}

// HandleUpdateSelf is the machine API side of UpdateMachine
// (POST api.MachinePathSelf).
func (m *Members) HandleUpdateSelf(w http.ResponseWriter, r *http.Request) {
	var u api.MachineUpdate
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&u); err != nil {
		http.Error(w, "malformed update: "+err.Error(), http.StatusBadRequest)
		return
	}
	rec, err := m.updateSelf(r.Context(), u)
	switch {
	case errors.Is(err, api.ErrBadRequest):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case errors.Is(err, api.ErrConflict):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rec)
	}
}
