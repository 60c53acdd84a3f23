package orchestrate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/docker/go-units"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Placement rules, applied before anything starts: a machine is a
// candidate for a new container of a service only if it meets the
// service's constraints, holds its named volumes (once they exist
// somewhere), has no container binding one of its published host ports,
// and has room for its reservations. Among those, each replica goes to
// the machine with the fewest containers of the service (spread). When
// no machine fits, the error says why for each machine.

// Capacity is what a machine's Docker reports: CPUs and memory in total,
// and the architecture. Zero values: not known (an older agent), so
// nothing is refused for lack of room there.
type Capacity struct {
	CPUs   float64
	Memory int64
	Arch   string
}

// load is what containers already take on a machine.
type load struct {
	ports     []portUse // host ports bound by containers there
	cpus      float64   // reserved by uncloud containers there
	memory    int64
	ofService int // containers of the service being placed
	// total counts every uncloud container there, and those a deploy
	// has already planned there for its other services: ties between
	// machines with as many of the service go to the emptier one.
	total int
}

// portUse is a host port bound on a machine, and by which service.
type portUse struct {
	record.Binding
	Service string
}

// candidate is a machine placement may choose, with what it has.
type candidate struct {
	Machine
	capacity Capacity
	load     load
}

// want is what one service asks of placement.
type want struct {
	service     string
	spec        runtime.ContainerSpec
	constraints []constraint
	// pinned are the machines holding the service's named volumes (ID
	// to name); empty when none exist yet (the first replicas go anywhere).
	pinned map[string]string
	// planned is what the same deploy placed for the services planned
	// before this one (nil outside a deploy).
	planned *plannedDeploy
}

// fixedBindings are the host ports the spec publishes on a port it
// names (ports Docker picks never collide).
func fixedBindings(spec runtime.ContainerSpec) []record.Binding {
	var out []record.Binding
	for _, b := range spec.Bindings() {
		if b.HostPort != 0 {
			out = append(out, b)
		}
	}
	return out
}

// eligible says why a machine can never take the service (constraints,
// volumes), or "" when it may.
func (w want) eligible(c candidate) string {
	for _, k := range w.constraints {
		if !k.holds(c) {
			return fmt.Sprintf("%s: does not meet %s", c.Name, k)
		}
	}
	if _, ok := w.pinned[c.ID]; len(w.pinned) > 0 && !ok {
		var on []string
		for _, name := range w.pinned {
			on = append(on, name)
		}
		slices.Sort(on)
		return fmt.Sprintf("%s: does not hold the service's volumes %s (they live on %s)", c.Name,
			strings.Join(w.spec.NamedVolumes(), ", "), strings.Join(on, ", "))
	}
	return ""
}

// room says why one more container does not fit on c, which already
// got added new ones in this placement, or "" when it fits.
func (w want) room(c candidate, added int) string {
	for _, b := range fixedBindings(w.spec) {
		if c.load.ofService+added > 0 {
			return fmt.Sprintf("%s: host port %s is bound there by another replica of %s (one replica per machine publishes it)",
				c.Name, b, w.service)
		}
		for _, u := range c.load.ports {
			if u.Collides(b) {
				return fmt.Sprintf("%s: host port %s is taken there by service %s", c.Name, b, u.Service)
			}
		}
	}
	if r := w.spec.ReserveMemory; r > 0 && c.capacity.Memory > 0 {
		if free := c.capacity.Memory - c.load.memory - int64(added)*r; free < r {
			return fmt.Sprintf("%s: memory: %s reserved, %s of %s free", c.Name, units.BytesSize(float64(r)),
				units.BytesSize(float64(max(free, 0))), units.BytesSize(float64(c.capacity.Memory)))
		}
	}
	if r := w.spec.ReserveCPUs; r > 0 && c.capacity.CPUs > 0 {
		if free := c.capacity.CPUs - c.load.cpus - float64(added)*r; free+1e-9 < r { // 1e-9: float sums
			return fmt.Sprintf("%s: CPUs: %g reserved, %g of %g free", c.Name, r, max(free, 0), c.capacity.CPUs)
		}
	}
	return ""
}

// fit places n new containers of a replicated service on the candidates
// (in their order; ties go to the earlier one). It refuses the whole
// placement, saying why for each machine, when any replica fits nowhere.
func fit(cands []candidate, w want, n int) ([]Machine, error) {
	var pool []candidate
	var why []string
	for _, c := range cands {
		if r := w.eligible(c); r != "" {
			why = append(why, r)
			continue
		}
		pool = append(pool, c)
	}
	added := make([]int, len(pool))
	out := make([]Machine, 0, n)
	for i := range n {
		best := -1
		var full []string
		for j, c := range pool {
			if r := w.room(c, added[j]); r != "" {
				full = append(full, r)
				continue
			}
			if best < 0 || fewer(c.load, added[j], pool[best].load, added[best]) {
				best = j
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("%w: replica %d of %d of %s fits on no machine: %s", api.ErrConflict, i+1, n, w.service,
				strings.Join(append(why, full...), "; "))
		}
		added[best]++
		out = append(out, pool[best].Machine)
	}
	return out, nil
}

// fewer says whether machine a (with added new containers) comes before
// machine b: fewer of the service, then fewer in all; else the earlier.
func fewer(a load, addedA int, b load, addedB int) bool {
	if sa, sb := a.ofService+addedA, b.ofService+addedB; sa != sb {
		return sa < sb
	}
	return a.total+addedA < b.total+addedB
}

// fitGlobal places one container on every candidate that may take the
// service and lacks one; a machine that is eligible but has no room (a
// host port taken, no memory) refuses the whole placement.
func fitGlobal(cands []candidate, w want) ([]Machine, error) {
	var out []Machine
	for _, c := range cands {
		if w.eligible(c) != "" {
			continue
		}
		if r := w.room(c, 0); r != "" && c.load.ofService == 0 {
			return nil, fmt.Errorf("%w: global service %s cannot run on %s", api.ErrConflict, w.service, r)
		}
		out = append(out, c.Machine)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no machine meets the placement of %s", api.ErrConflict, w.service)
	}
	return out, nil
}
