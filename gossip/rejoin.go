package gossip

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// rejoinParallel bounds concurrent rejoin attempts: each one against a
// machine that is still away runs to the dial timeout.
const rejoinParallel = 4

// rejoinLoop re-joins known machines every RejoinInterval (±20 % jitter,
// so machines that lost each other at the same moment do not retry in
// lockstep).
//
// memberlist probes and push/pulls only members it believes alive, so once
// the two sides of a partition have declared each other dead, nothing in
// memberlist ever reconnects them. Joining a known address is a push/pull
// that carries both member lists and every topic's LocalState, which is
// what heals membership and the replicated state.
func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	for {
		d := n.cfg.RejoinInterval
		d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
		t := time.NewTimer(d)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n.left.Load() {
			continue
		}
		n.rejoin()
	}
}

// rejoin tries every target once and waits for the attempts.
func (n *Node) rejoin() {
	targets := n.rejoinTargets(time.Now())
	if len(targets) == 0 {
		return
	}
	sem := make(chan struct{}, rejoinParallel)
	var wg sync.WaitGroup
	for _, a := range targets {
		select {
		case <-n.ctx.Done():
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if c, err := n.ml.Join([]string{a}); err != nil || c == 0 {
				n.log.Debug("gossip: rejoin failed", "addr", a, "err", err)
				return
			}
			n.stats.rejoined.Add(1)
			n.log.Info("gossip: rejoined", "addr", a)
		}()
	}
	wg.Wait()
}

// rejoinTargets lists the seeds and every member ever seen that did not
// leave, skipping those alive now, and forgets members that have been away
// longer than forgetAfter.
func (n *Node) rejoinTargets(now time.Time) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	alive := make(map[netip.AddrPort]bool)
	var out []string
	for name, e := range n.members {
		if e.state == Alive {
			alive[e.member().Addr] = true
			continue
		}
		if now.Sub(e.since) > n.timing.forgetAfter {
			delete(n.members, name)
			continue
		}
		if e.state == Left || name == n.cfg.Name {
			continue
		}
		out = append(out, name+"/"+e.member().Addr.String())
	}
	for _, s := range n.cfg.Seeds {
		// A seed given as ip:port that is a live member needs no join; a
		// name that needs resolving is always tried (cheap: it is a seed).
		if ap, err := netip.ParseAddrPort(s); err == nil && alive[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] {
			continue
		}
		out = append(out, s)
	}
	return out
}
