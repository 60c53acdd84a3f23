package orchestrate

import "sort"

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
