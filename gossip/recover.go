package gossip

import (
	"regexp"
	"sync"
	"time"
)

// Recovery from short partitions.
//
// A split shorter than the suspicion timeout never makes a member dead, so
// it never rejoins either: memberlist sees the suspect refute and carries
// on, and nothing tells the topics (the replicated state among them) that
// the broadcasts sent during the split were lost. They would wait for a
// random push/pull (pushPullInterval) to pick a member across the old
// split. So while a member is suspect, this machine keeps trying one
// push/pull with it; the first that gets through after the heal carries
// every topic's state both ways, and then it stops.
//
// memberlist tells delegates nothing about suspicion (its Node.State is
// never filled in); the prober's own log line "Suspect X has failed" is the
// only signal, read by the log bridge.

// suspectLine matches memberlist's log of a failed probe.
var suspectLine = regexp.MustCompile(`^Suspect (\S+) has failed`)

// recoveryWindow is how long after a suspicion sync attempts go on; past
// it the member is dead (and the rejoin timer owns it) or long back.
const recoveryWindow = time.Minute

type suspicions struct {
	mu      sync.Mutex
	since   map[string]time.Time // member name → when it was suspected
	syncing map[string]bool      // a push/pull attempt is in flight
	wake    chan struct{}        // a new suspicion, for a sleeping recoverLoop
}

// noteSuspect records that a probe of name failed.
func (n *Node) noteSuspect(name string) {
	if name == n.cfg.Name {
		return
	}
	n.sus.mu.Lock()
	defer n.sus.mu.Unlock()
	if _, ok := n.sus.since[name]; !ok {
		n.sus.since[name] = time.Now()
		select {
		case n.sus.wake <- struct{}{}:
		default:
		}
	}
}

// recoverLoop tries, every half probe interval, one push/pull with each
// suspected member that has none in flight. With no suspect it sleeps
// until one appears: an idle agent should not wake for nothing.
func (n *Node) recoverLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.timing.probeInterval / 2)
	defer t.Stop()
	for {
		if !n.anySuspect() {
			t.Stop()
			select {
			case <-n.ctx.Done():
				return
			case <-n.sus.wake:
			}
			t.Reset(n.timing.probeInterval / 2)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		for _, name := range n.dueSuspects(time.Now()) {
			n.trySync(name)
		}
	}
}

// dueSuspects drops suspicions that are over (member dead or window past)
// and returns the members to try now.
func (n *Node) dueSuspects(now time.Time) []string {
	n.mu.Lock()
	alive := map[string]bool{}
	for name, e := range n.members {
		alive[name] = e.state == Alive
	}
	n.mu.Unlock()
	n.sus.mu.Lock()
	defer n.sus.mu.Unlock()
	var due []string
	for name, since := range n.sus.since {
		switch {
		case !alive[name] || now.Sub(since) > recoveryWindow:
			if !n.sus.syncing[name] {
				delete(n.sus.since, name)
			}
		case !n.sus.syncing[name]:
			n.sus.syncing[name] = true
			due = append(due, name)
		}
	}
	return due
}

// trySync runs one push/pull with the named member in the background; a
// success ends its suspicion.
func (n *Node) trySync(name string) {
	var target string
	for _, m := range n.ml.Members() {
		if m.Name == name {
			target = m.Name + "/" + addrPort(m.Addr, m.Port).String()
		}
	}
	done := func(ok bool) {
		n.sus.mu.Lock()
		defer n.sus.mu.Unlock()
		delete(n.sus.syncing, name)
		if ok {
			delete(n.sus.since, name)
		}
	}
	if target == "" {
		done(false)
		return
	}
	if !n.spawn(func() {
		_, err := n.ml.Join([]string{target})
		if err == nil {
			n.stats.recovered.Add(1)
			n.log.Debug("gossip: state exchanged with a member back from suspicion", "member", name)
		}
		done(err == nil)
	}) {
		done(false)
	}
}

func (n *Node) anySuspect() bool {
	n.sus.mu.Lock()
	defer n.sus.mu.Unlock()
	return len(n.sus.since) > 0
}

// Suspected reports whether this machine's probe of the named member
// failed and no state exchange with it has succeeded since: memberlist's
// "suspect", as far as this machine knows it.
func (n *Node) Suspected(name string) bool {
	n.sus.mu.Lock()
	defer n.sus.mu.Unlock()
	_, ok := n.sus.since[name]
	return ok
}
