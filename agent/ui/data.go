package ui

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// This file is where the dashboard reads the network: every page is drawn
// from one snapshot. New machine fields (a version, a mode) are wired here.

// snapshot is the network as this machine sees it at one moment.
type snapshot struct {
	At         time.Time
	Self       string // the answering machine's name
	SelfID     string
	Machines   []machineRow
	Services   []api.ServiceInfo
	Containers []api.ContainerInfo
	// Routes are the published hosts as this machine's ingress has them
	// (none on a machine without the ingress role: the page says so).
	Routes    []api.IngressRoute
	IngressOn bool
	// Unseen are the machines this one cannot see now: what the pages
	// show of them is the last recorded state, and says so.
	Unseen []machineRow
	Errors []string // parts that could not be read, named
}

// machineRow is one machine with what the dashboard shows of it.
type machineRow struct {
	api.MachineInfo
	// Shown is the word on the page: self, alive, suspect, down, or
	// unreachable (gossip has it alive, this machine has no fresh path).
	Shown      string
	Seen       bool  // this machine reaches it now
	View       *View // its own report, when it answered
	Containers int
	Running    int
}

// viewCache keeps other machines' views for a second, so that several
// pages or events in the same second ask each machine once.
type viewCache struct {
	mu    sync.Mutex
	at    time.Time
	views map[string]*View
}

const viewTTL = time.Second

// peerViewTimeout bounds asking one machine for its view: a machine that
// does not answer in time is drawn without its report.
const peerViewTimeout = 1500 * time.Millisecond

func (c *viewCache) get(ctx context.Context, src Source, selfID string, ids []string) map[string]*View {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < viewTTL && c.views != nil {
		return c.views
	}
	out := map[string]*View{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vctx, cancel := context.WithTimeout(ctx, peerViewTimeout)
			defer cancel()
			var v View
			var err error
			if id == selfID {
				v, err = LocalView(vctx, src, selfID)
			} else {
				v, err = src.PeerView(vctx, id)
			}
			if err == nil {
				mu.Lock()
				out[id] = &v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	c.at, c.views = time.Now(), out
	return out
}

// read takes a snapshot; withViews also asks every machine it reaches for
// its own report (the overview's load and memory, the mesh picture).
func (s *Server) read(ctx context.Context, withViews bool) snapshot {
	snap := snapshot{At: time.Now()}
	fail := func(what string, err error) { snap.Errors = append(snap.Errors, fmt.Sprintf("%s: %v", what, err)) }
	st, err := s.src.Status(ctx)
	if err != nil {
		fail("status", err)
	}
	snap.Self, snap.SelfID = st.Name, st.MachineID
	machines, err := s.src.Machines(ctx)
	if err != nil {
		fail("machines", err)
	}
	if snap.Services, err = s.src.Services(ctx); err != nil {
		fail("services", err)
	}
	if snap.Containers, err = s.src.Containers(ctx); err != nil {
		fail("containers", err)
	}
	if in, err := s.src.Ingress(ctx); err != nil {
		fail("ingress", err)
	} else {
		snap.Routes, snap.IngressOn = in.Routes, in.Running
	}
	sort.Slice(snap.Containers, func(i, j int) bool {
		a, b := snap.Containers[i], snap.Containers[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Machine != b.Machine {
			return a.Machine < b.Machine
		}
		return a.Name < b.Name
	})
	reach := s.src.Reachable()
	var seen []string
	for _, m := range machines {
		row := machineRow{MachineInfo: m, Seen: m.State == "self" || reach[m.ID]}
		switch {
		case m.State == "self":
			row.Shown = "self"
		case m.State == "down" || m.State == "suspect":
			row.Shown = m.State
		case !row.Seen:
			row.Shown = "unreachable"
		default:
			row.Shown = "alive"
		}
		if row.Shown != "self" && row.Shown != "alive" {
			row.Seen = false
		}
		for _, c := range snap.Containers {
			if c.MachineID == m.ID {
				row.Containers++
				if c.State == "running" {
					row.Running++
				}
			}
		}
		if row.Seen {
			seen = append(seen, m.ID)
		}
		snap.Machines = append(snap.Machines, row)
	}
	if withViews {
		views := s.views.get(ctx, s.src, snap.SelfID, seen)
		for i := range snap.Machines {
			snap.Machines[i].View = views[snap.Machines[i].ID]
		}
	}
	for _, m := range snap.Machines {
		if !m.Seen {
			snap.Unseen = append(snap.Unseen, m)
		}
	}
	return snap
}

// unseenIDs are the machine IDs of snap.Unseen.
func (snap snapshot) unseenIDs() map[string]bool {
	out := map[string]bool{}
	for _, m := range snap.Unseen {
		out[m.ID] = true
	}
	return out
}
