package ingress

import (
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// Balancing policies.
const (
	RoundRobin       = "round_robin"
	LeastConnections = "least_conn"
)

// backend is one container port a route forwards to. Its counters
// outlive table swaps (the pool hands the same backend to the next table)
// so in-flight counts and passive health carry over.
type backend struct {
	addr        string // a container's mesh address and port
	machineID   string
	containerID string
	name        string

	inflight  atomic.Int64
	downUntil atomic.Int64 // unix nanoseconds; passive health
	failures  atomic.Uint64

	// conns are the open upstream connections, so that a backend whose
	// machine became unreachable can have them closed: a request waiting
	// on a connection into a partition would otherwise wait for TCP to
	// give up, minutes later.
	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	// cuts counts closeConns calls: the event loops' connections are
	// not in conns (they are raw descriptors of one loop), so each loop
	// closes those it opened before the count moved.
	cuts atomic.Uint64
}

type trackedConn struct {
	net.Conn
	b    *backend
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.b.connMu.Lock()
		delete(c.b.conns, c)
		c.b.connMu.Unlock()
	})
	return c.Conn.Close()
}

func (b *backend) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, b: b}
	b.connMu.Lock()
	if b.conns == nil {
		b.conns = map[*trackedConn]struct{}{}
	}
	b.conns[tc] = struct{}{}
	b.connMu.Unlock()
	return tc
}

// closeConns aborts every connection to the backend; requests in flight
// on them fail at once and, where safe, are retried elsewhere.
func (b *backend) closeConns() int {
	b.cuts.Add(1)
	b.connMu.Lock()
	cs := make([]*trackedConn, 0, len(b.conns))
	for c := range b.conns {
		cs = append(cs, c)
	}
	b.connMu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return len(cs)
}

func (b *backend) down(now int64) bool { return b.downUntil.Load() > now }

func nowNano() int64 { return time.Now().UnixNano() }

// markFailed puts the backend aside for d.
func (b *backend) markFailed(d time.Duration) {
	b.failures.Add(1)
	b.downUntil.Store(time.Now().Add(d).UnixNano())
}

// pool keeps one backend per container address and port.
type pool struct {
	mu sync.Mutex
	m  map[string]*backend
}

func newPool() *pool { return &pool{m: map[string]*backend{}} }

func (p *pool) get(c *record.Container, port uint16) *backend {
	addr := net.JoinHostPort(c.Address, strconv.Itoa(int(port)))
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.m[addr]
	if b == nil || b.containerID != c.ID {
		// A new container on a reused address starts with clean health.
		b = &backend{addr: addr, machineID: c.MachineID, containerID: c.ID, name: c.Name}
		p.m[addr] = b
	}
	return b
}

// lookup finds the backend of an upstream address, if a route uses it.
func (p *pool) lookup(addr string) *backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[addr]
}

// keep forgets backends that no route uses any more.
func (p *pool) keep(live map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a := range p.m {
		if !live[a] {
			delete(p.m, a)
		}
	}
}

// pick chooses a backend for the route, never one of skip (those that
// already failed for this request). Backends put aside by passive health are avoided while any
// other is left; when all are aside, one is tried anyway: a failed try
// costs no more than refusing the request.
func pick(r *Route, policy string, skip ...*backend) *backend {
	n := len(r.Backends)
	if n == 0 {
		return nil
	}
	start := int(r.rr.Add(1))
	now := time.Now().UnixNano()
	var best, fallback *backend
	for i := 0; i < n; i++ {
		b := r.Backends[(start+i)%n]
		if slices.Contains(skip, b) {
			continue
		}
		if b.down(now) {
			if fallback == nil {
				fallback = b
			}
			continue
		}
		if policy != LeastConnections {
			return b
		}
		if best == nil || b.inflight.Load() < best.inflight.Load() {
			best = b
		}
	}
	if best != nil {
		return best
	}
	return fallback
}
