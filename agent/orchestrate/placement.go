package orchestrate

import "sort"

// spread places n new containers of a service: each goes to the machine
// that has the fewest of the service's containers at that point (ties go
// to the earlier machine in the list), so replicas spread evenly and
// existing ones are counted.
func spread(machines []string, existing map[string]int, n int) []string {
	if len(machines) == 0 || n <= 0 {
		return nil
	}
	count := make(map[string]int, len(machines))
	for _, m := range machines {
		count[m] = existing[m]
	}
	out := make([]string, 0, n)
	for range n {
		best := machines[0]
		for _, m := range machines[1:] {
			if count[m] < count[best] {
				best = m
			}
		}
		count[best]++
		out = append(out, best)
	}
	return out
}

// victim is a container that scaling down may remove.
type victim struct {
	ID, Name, Machine string
	Running           bool
	Reachable         bool // its machine can be asked to remove it
}

// shrink picks k containers to remove: reachable ones only (a removal
// that cannot happen would leave the count wrong), not-running ones first,
// then from the machines that have the most, newest name last as a
// stable tie-break.
func shrink(cs []victim, k int) []victim {
	var pool []victim
	perMachine := map[string]int{}
	for _, c := range cs {
		perMachine[c.Machine]++
		if c.Reachable {
			pool = append(pool, c)
		}
	}
	var out []victim
	for len(out) < k && len(pool) > 0 {
		sort.SliceStable(pool, func(i, j int) bool {
			a, b := pool[i], pool[j]
			if a.Running != b.Running {
				return !a.Running
			}
			if perMachine[a.Machine] != perMachine[b.Machine] {
				return perMachine[a.Machine] > perMachine[b.Machine]
			}
			return a.Name < b.Name
		})
		out = append(out, pool[0])
		perMachine[pool[0].Machine]--
		pool = pool[1:]
	}
	return out
}
