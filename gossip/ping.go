package gossip

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Direct pings and reconnects on request.
//
// memberlist probes one member per probe interval and needs a suspicion
// timeout on top before it calls a member dead: right for the mesh-wide
// verdict, slow for this machine's own view of whom it can reach. The
// agent reads WireGuard's receive counters for that view and, for a peer
// it has heard nothing from for a moment, asks for a ping here: the answer
// is WireGuard traffic that proves the path, and its absence is evidence
// that the path is gone. When such a ping reaches a member that memberlist
// has already given up on (a healed partition), Reconnect merges state
// with it at once instead of waiting for the rejoin timer.

// ErrUnknownMember is returned for a name this machine never saw.
var ErrUnknownMember = errors.New("gossip: unknown member")

// Ping sends one direct probe to the named member, whatever memberlist
// thinks of it (alive, suspect or dead), and waits for the ack up to the
// probe timeout. It returns the round-trip time.
func (n *Node) Ping(name string) (time.Duration, error) {
	if n.closing.Load() {
		return 0, ErrClosed
	}
	n.mu.Lock()
	e, ok := n.members[name]
	var addr *net.UDPAddr
	if ok {
		addr = &net.UDPAddr{IP: e.node.Addr, Port: int(e.node.Port)}
	}
	n.mu.Unlock()
	if !ok || name == n.cfg.Name {
		return 0, fmt.Errorf("ping %q: %w", name, ErrUnknownMember)
	}
	rtt, err := n.ml.Ping(name, addr)
	if err != nil {
		return 0, fmt.Errorf("gossip: ping %q at %s: %w", name, addr, err)
	}
	return rtt, nil
}

// reconnects tracks Reconnect attempts in flight, one per member.
type reconnects struct {
	mu       sync.Mutex
	inFlight map[string]bool
}

// Reconnect starts one push/pull with the named member in the background
// if memberlist does not have it alive (nothing to do otherwise) and no
// attempt with it is in flight: both member lists and every topic's state
// cross, which is what brings a healed partition together. It reports
// whether an attempt was started.
func (n *Node) Reconnect(name string) bool {
	n.mu.Lock()
	e, ok := n.members[name]
	var target string
	if ok && e.state != Alive && e.state != Left && name != n.cfg.Name {
		target = name + "/" + e.member().Addr.String()
	}
	n.mu.Unlock()
	if target == "" || n.left.Load() {
		return false
	}
	n.recon.mu.Lock()
	if n.recon.inFlight[name] {
		n.recon.mu.Unlock()
		return false
	}
	n.recon.inFlight[name] = true
	n.recon.mu.Unlock()
	done := func() {
		n.recon.mu.Lock()
		delete(n.recon.inFlight, name)
		n.recon.mu.Unlock()
	}
	started := n.spawn(func() {
		defer done()
		if c, err := n.ml.Join([]string{target}); err != nil || c == 0 {
			n.log.Debug("gossip: reconnect failed", "member", name, "err", err)
			return
		}
		n.stats.rejoined.Add(1)
		n.log.Info("gossip: reconnected with a member heard again", "member", name)
	})
	if !started {
		done()
	}
	return started
}
