package crdt

import (
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
)

// peers remembers which machines are alive (we heard from them recently) and
// which machine announced or served which block, to choose where to fetch.
type peers struct {
	mu       sync.Mutex
	self     string
	lastSeen map[string]time.Time
	hints    map[cid.Cid]string // block → machine that announced/served it
	live     func() []string    // optional authoritative member list
}

// maxHints bounds the hint map; when full it is simply reset (hints are
// an optimisation: without one we ask every live machine in turn).
const maxHints = 200_000

// liveWindow is how long a machine we heard from counts as live when no
// member list is given.
const liveWindow = 2 * time.Minute

func newPeers(self string, live func() []string) *peers {
	return &peers{self: self, lastSeen: map[string]time.Time{}, hints: map[cid.Cid]string{}, live: live}
}

func (p *peers) seen(machine string) {
	if machine == "" || machine == p.self {
		return
	}
	p.mu.Lock()
	p.lastSeen[machine] = time.Now()
	p.mu.Unlock()
}

func (p *peers) hint(machine string, cids ...cid.Cid) {
	if machine == "" || machine == p.self {
		return
	}
	p.mu.Lock()
	if len(p.hints)+len(cids) > maxHints {
		clear(p.hints)
	}
	for _, c := range cids {
		p.hints[c] = machine
	}
	p.mu.Unlock()
}

// candidates returns the machines to ask for cids: the machines hinted for
// them first, then every other live machine, most recently heard first.
func (p *peers) candidates(cids []cid.Cid) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	add := func(m string) {
		if m != "" && m != p.self && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	for _, c := range cids {
		add(p.hints[c])
	}
	var live []string
	if p.live != nil {
		live = p.live()
	} else {
		cutoff := time.Now().Add(-liveWindow)
		for m, t := range p.lastSeen {
			if t.After(cutoff) {
				live = append(live, m)
			}
		}
	}
	slices.SortFunc(live, func(a, b string) int { return p.lastSeen[b].Compare(p.lastSeen[a]) })
	for _, m := range live {
		add(m)
	}
	return out
}
