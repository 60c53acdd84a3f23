package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Node is this machine's membership in the mesh.
type Node struct {
	cfg    Config
	timing timing
	log    *slog.Logger
	addr   netip.AddrPort

	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring
	keyMu     sync.Mutex // serialises SetKeys (the keyring's own edits are not atomic)
	transport *meshTransport
	queue     *gossipQueue
	fanout    *fanout
	events    *eventQueue
	replay    *replayFilter
	stats     counters
	sus       suspicions
	recon     reconnects

	// epoch and seq identify this machine's messages: epoch is the boot
	// time, so identities never repeat across restarts.
	epoch uint64
	seq   atomic.Uint64

	// mu guards the membership table and the metadata. Never call into
	// memberlist while holding it: memberlist calls memberChanged under its
	// own lock, which takes mu.
	mu      sync.Mutex
	members map[string]*memberEntry
	meta    []byte
	alive   atomic.Int64 // live members in the table, self included

	hmu      sync.RWMutex // guards handlers and states
	handlers map[string]func(from string, payload []byte)
	states   map[string]stateFuncs

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // background goroutines
	spawnMu   sync.Mutex     // orders wg.Add before Close's wg.Wait
	closing   atomic.Bool
	left      atomic.Bool
	closeOnce sync.Once
	leaveMu   sync.Mutex // serialises Leave and Close (memberlist panics on Leave after Shutdown)
}

// New starts a Node: it binds cfg.BindAddr, joins cfg.Seeds (failing to
// reach any is logged, not an error: a machine works alone and the rejoin
// timer keeps trying) and starts the rejoin timer. ctx bounds only the
// start; the node runs until Close.
func New(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	t := production()
	if cfg.timing != nil {
		t = *cfg.timing
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:      cfg,
		timing:   t,
		log:      cfg.Logger,
		epoch:    uint64(time.Now().UnixNano()),
		members:  make(map[string]*memberEntry),
		meta:     cfg.Meta,
		handlers: make(map[string]func(string, []byte)),
		states:   make(map[string]stateFuncs),
		replay:   newReplayFilter(),
		recon:    reconnects{inFlight: map[string]bool{}},
		sus:      suspicions{since: map[string]time.Time{}, syncing: map[string]bool{}, wake: make(chan struct{}, 1)},
		ctx:      nctx,
		cancel:   cancel,
	}
	n.events = newEventQueue(&n.stats.eventsDropped)
	n.queue = newGossipQueue(func() int { return int(n.alive.Load()) }, &n.stats.queuePruned)
	n.fanout = newFanout(n.sendStream)

	mlLog := newMemberlistLogger(cfg.Logger, &n.stats.undecryptable, n.noteSuspect)
	tr, err := newMeshTransport(nctx, cfg.BindAddr, cfg.Network, t.tcpTimeout)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("gossip: start %q: %w", cfg.Name, err)
	}
	n.transport = tr
	n.addr = tr.boundAddr(cfg.BindAddr)

	keyring, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		tr.Shutdown()
		cancel()
		return nil, fmt.Errorf("gossip: start %q: keyring: %w", cfg.Name, err)
	}
	mc := memberlistConfig(cfg, t)
	mc.BindPort = int(n.addr.Port())
	if mc.AdvertiseAddr != "" && mc.AdvertisePort == 0 {
		mc.AdvertisePort = int(n.addr.Port())
	}
	mc.Keyring = keyring
	n.keyring = keyring
	mc.Logger = mlLog
	mc.Delegate = delegate{n}
	mc.Events = delegate{n}
	var mt memberlist.NodeAwareTransport = tr
	if cfg.wrapTransport != nil {
		mt = cfg.wrapTransport(tr)
	}
	mc.Transport = mt

	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		cancel()
		return nil, fmt.Errorf("gossip: start %q on %s: %w", cfg.Name, n.addr, err)
	}
	n.ml = ml
	n.fanout.start(nctx, &n.wg)

	if len(cfg.Seeds) > 0 {
		if c, err := n.Join(ctx, cfg.Seeds); err != nil {
			n.log.Warn("gossip: no seed reachable at start; working alone, will retry", "seeds", cfg.Seeds, "err", err)
		} else {
			n.log.Info("gossip: joined", "contacted", c)
		}
	}
	n.wg.Add(2)
	go n.rejoinLoop()
	go n.recoverLoop()
	return n, nil
}

// Join contacts all addrs ("host:port" or "name/host:port") at once and
// returns as soon as one of them answered (its count of nodes joined);
// the other attempts go on in the background and merge state with whoever
// they reach. The error (all attempts joined) is non-nil only if none
// answered. Each attempt is bounded by the stream timeout.
func (n *Node) Join(ctx context.Context, addrs []string) (int, error) {
	if n.closing.Load() {
		return 0, ErrClosed
	}
	// All addresses at once: one machine that is down (or does not know
	// us yet, as right after a join) must not hold the others up for a
	// whole TCP timeout each.
	type result struct {
		joined int
		err    error
	}
	results := make(chan result, len(addrs))
	for _, a := range addrs {
		go func() {
			if err := ctx.Err(); err != nil {
				results <- result{err: fmt.Errorf("join %s: %w", a, err)}
				return
			}
			c, err := n.ml.Join([]string{a})
			if err != nil {
				err = fmt.Errorf("join %s: %w", a, err)
			}
			results <- result{joined: c, err: err}
		}()
	}
	// The first answer is enough: push/pull with one member brings the
	// whole member list. The other attempts finish in the background
	// (results is buffered, so they never block).
	var errs []error
	for range addrs {
		r := <-results
		if r.err == nil && r.joined > 0 {
			return r.joined, nil
		}
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("gossip: %w", errors.Join(errs...))
	}
	return 0, nil
}

// Members returns the live members, this machine included, sorted by name.
// Suspects are listed as Alive until memberlist declares them dead.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.members))
	for _, e := range n.members {
		if e.state == Alive {
			out = append(out, e.member())
		}
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// LocalName is this machine's name.
func (n *Node) LocalName() string { return n.cfg.Name }

// Addr is the address actually bound (port resolved when 0 was asked).
func (n *Node) Addr() netip.AddrPort { return n.addr }

// Events delivers membership changes. It is buffered (eventBuffer); when
// nobody reads, the oldest events are dropped and counted in
// Stats.EventsDropped, so memberlist is never blocked. It is closed by Close.
func (n *Node) Events() <-chan Event { return n.events.ch }

// SetMeta replaces this machine's metadata and waits until memberlist has
// gossiped the change once, or ctx is done. The new metadata is in effect
// locally at once either way, and push/pull carries it if gossip does not.
func (n *Node) SetMeta(ctx context.Context, meta []byte) error {
	if len(meta) > MaxMetaSize {
		return fmt.Errorf("gossip: set meta: %d bytes, limit %d", len(meta), MaxMetaSize)
	}
	if n.closing.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gossip: set meta: %w", err)
	}
	n.mu.Lock()
	n.meta = clone(meta)
	n.mu.Unlock()

	// UpdateNode blocks until the broadcast is done or its timeout: give it
	// ctx's deadline, or the leave timeout when ctx has none.
	timeout := n.timing.leaveTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	if err := n.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: set meta (%d bytes): %w", len(meta), err)
	}
	return nil
}

// Leave tells the mesh this machine is leaving on purpose (members mark it
// Left, not Dead, and stop re-joining it), waiting until that is gossiped or
// ctx is done. The node keeps running until Close; it no longer re-joins.
func (n *Node) Leave(ctx context.Context) error {
	n.leaveMu.Lock()
	defer n.leaveMu.Unlock()
	if n.closing.Load() {
		return ErrClosed
	}
	n.left.Store(true)
	// Announce first (straight to every member, and gossiped), so members
	// record Left, not Dead, when memberlist reports us gone.
	if err := n.broadcast(leftTopic, "", nil); err != nil {
		return fmt.Errorf("gossip: leave %q: %w", n.cfg.Name, err)
	}
	timeout := n.timing.leaveTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	if err := n.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip: leave %q: %w", n.cfg.Name, err)
	}
	return nil
}

// spawn runs f on a goroutine that Close waits for; it reports false (and
// does not run f) once Close has begun.
func (n *Node) spawn(f func()) bool {
	n.spawnMu.Lock()
	defer n.spawnMu.Unlock()
	if n.closing.Load() {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// Close stops the node without a Leave (members will detect it as Dead):
// it aborts streams and dials in flight, stops memberlist and every
// goroutine of this package, and closes Events. It is idempotent.
func (n *Node) Close() error {
	n.leaveMu.Lock()
	defer n.leaveMu.Unlock()
	var err error
	n.closeOnce.Do(func() {
		n.spawnMu.Lock()
		n.closing.Store(true)
		n.spawnMu.Unlock()
		n.cancel()
		if e := n.ml.Shutdown(); e != nil {
			err = fmt.Errorf("gossip: close %q: %w", n.cfg.Name, e)
		}
		n.wg.Wait()
		n.queue.reset()
		n.events.close()
	})
	return err
}
