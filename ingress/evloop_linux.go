package ingress

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The plain-HTTP fast path on epoll event loops, the shape of nginx's and
// haproxy's workers. With a goroutine per connection (fastConn), each
// request cost ~6 system calls (Go's netpoller reads before it parks, so
// every wait began with a read that returned EAGAIN) and a park and wake
// of two goroutines, often handed between the two Ps: on this 2-core
// machine that was the gap to nginx. Here GOMAXPROCS loops, each a
// goroutine locked to its thread, own non-blocking descriptors: client
// sockets and the container sockets of their requests, so a request never
// crosses threads, and a socket is read only when epoll announced data
// (edge-triggered; a short read means drained, so no read returns
// EAGAIN). Anything the loop does not serve (fastConn's fallbacks, bodies
// not wholly in the buffer, a container failing before any of its answer
// went out) goes back, with the bytes read, to the goroutine path as a
// net.Conn.

// evGroup is a fastServer's loops.
type evGroup struct {
	s     *fastServer
	loops []*evLoop
	next  atomic.Uint32 // round robin of adopted connections
	// nudge readies nudger, which starts a thread for an idle P; see
	// evLoop.woke.
	nudge   chan struct{}
	running atomic.Int32  // loops not yet ended; the last closes done
	done    chan struct{} // ends nudger
	nudges  atomic.Uint64 // tests
}

// evLoop is one loop. Everything but adoptCh, wakeFd and the stop flags
// belongs to its goroutine.
type evLoop struct {
	s      *fastServer
	epfd   int
	wakeFd int // eventfd: adopt, stop
	// adoptCh brings accepted connections; bounded, the acceptor waits.
	adoptCh          chan evAdopt
	stopping, forced atomic.Bool
	served           atomic.Uint64 // requests answered on the loop (tests)
	// parked: the goroutine waits in Go's netpoller (see woke).
	parked atomic.Bool
	// exited: the loop takes no more connections (adopt's send would
	// strand them).
	mu     sync.Mutex
	exited bool

	items  []evItem // by descriptor
	conns  map[*evConn]struct{}
	idle   map[*backend][]*evUp // kept container connections, most recent last
	addrs  map[string]unix.Sockaddr
	events [128]unix.EpollEvent
	now    time.Time
	swept  time.Time

	maxIdle     int
	upIdleLimit time.Duration

	// epf and erc are epfd as Go's netpoller sees it, to park on; nil:
	// the loop blocks its thread in epoll_wait.
	epf      *os.File
	erc      syscall.RawConn
	deadline time.Time
	pollFn   func(uintptr) bool
	polled   int
	polls    int // poll calls in this wait: more than one, the goroutine parked
	pollErr  unix.Errno
}

type evAdopt struct {
	fd       int
	clientIP string
}

// evItem is what a descriptor is: a client connection or a container one.
type evItem struct {
	c *evConn
	u *evUp
}

// evFlags: edge-triggered reads and writes, registered once for the
// descriptor's life (no epoll_ctl per request).
const evFlags = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

func newEvGroup(s *fastServer) *evGroup {
	g := &evGroup{s: s, nudge: make(chan struct{}, 1), done: make(chan struct{})}
	for range runtime.GOMAXPROCS(0) {
		l, err := newEvLoop(s)
		if err != nil {
			s.in.log.Warn("ingress: no event loop, goroutine per connection", "err", err)
			for _, l := range g.loops {
				l.stop(true)
			}
			return nil
		}
		g.loops = append(g.loops, l)
	}
	g.running.Store(int32(len(g.loops)))
	s.wg.Add(1)
	go g.nudger()
	for _, l := range g.loops {
		s.wg.Add(1)
		go l.run(g)
	}
	return g
}

// nudger is the goroutine a woken loop readies: readying a goroutine
// while a P is idle starts a thread for that P (the runtime's wakep),
// and that thread, finding nothing else to run, blocks in the netpoller,
// where the parked loops wait.
func (g *evGroup) nudger() {
	defer g.s.wg.Done()
	for {
		select {
		case <-g.nudge:
		case <-g.done:
			return
		}
	}
}

func newEvLoop(s *fastServer) (*evLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	up := s.in.fwd.up
	l := &evLoop{s: s, epfd: epfd, wakeFd: wfd, adoptCh: make(chan evAdopt, 64),
		conns: map[*evConn]struct{}{}, idle: map[*backend][]*evUp{}, addrs: map[string]unix.Sockaddr{},
		maxIdle: up.maxIdlePerHost, upIdleLimit: up.idleTimeout}
	// The loop parks in Go's netpoller (see wait). A deadline is refused
	// if the runtime's poller did not take the descriptor: then the loop
	// blocks its thread in epoll_wait.
	if err := unix.SetNonblock(epfd, true); err == nil {
		l.epf = os.NewFile(uintptr(epfd), "epoll")
		if rc, err := l.epf.SyscallConn(); err == nil && l.epf.SetReadDeadline(time.Time{}) == nil {
			l.erc, l.pollFn = rc, l.poll
		}
	}
	return l, nil
}

// adopt moves an accepted TCP connection to a loop: its descriptor is
// duplicated and the Go connection closed, which takes it out of the
// runtime's poller. false: not a TCP connection, serve it as before.
func (g *evGroup) adopt(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	ap, ok := tc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return false
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return false
	}
	l := g.loops[int(g.next.Add(1))%len(g.loops)]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exited {
		unix.Close(fd)
		return false
	}
	c.Close()
	g.s.wg.Add(1) // the connection's, until closed or handed over
	select {
	case l.adoptCh <- evAdopt{fd: fd, clientIP: ap.IP.String()}:
	default:
		// The loop is behind by a full queue: this connection takes the
		// goroutine path rather than wait.
		g.s.wg.Done()
		return g.s.handOverFd(fd, nil, 0)
	}
	l.wake()
	return true
}

// served counts the requests the loops answered.
func (g *evGroup) served() uint64 {
	var n uint64
	for _, l := range g.loops {
		n += l.served.Load()
	}
	return n
}

// stop asks the loops to close idle connections and end once the rest
// finished (force: at once).
func (g *evGroup) stop(force bool) {
	for _, l := range g.loops {
		l.stop(force)
	}
}

func (l *evLoop) stop(force bool) {
	l.stopping.Store(true)
	if force {
		l.forced.Store(true)
	}
	l.wake()
}

func (l *evLoop) wake() {
	one := uint64(1)
	unix.Write(l.wakeFd, (*[8]byte)(unsafe.Pointer(&one))[:])
}

func (l *evLoop) run(g *evGroup) {
	if l.erc == nil {
		runtime.LockOSThread()
	}
	defer l.s.wg.Done()
	defer func() {
		if g.running.Add(-1) == 0 {
			close(g.done)
		}
	}()
	defer l.close()
	l.now = time.Now()
	l.swept = l.now
	for {
		n, err := l.wait()
		l.now = time.Now()
		if l.polls > 1 {
			l.woke(g)
		}
		if err != nil && err != unix.EINTR {
			l.s.in.log.Error("ingress: epoll_wait", "err", err)
			l.forced.Store(true)
		}
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.wakeFd {
				var b [8]byte
				unix.Read(l.wakeFd, b[:])
				l.adoptPending()
				continue
			}
			if fd >= len(l.items) {
				continue
			}
			it := l.items[fd]
			switch {
			case it.c != nil:
				it.c.onEvent(ev.Events)
			case it.u != nil:
				it.u.onEvent(ev.Events)
			}
		}
		if l.now.Sub(l.swept) >= time.Second || l.stopping.Load() {
			l.sweep()
			if l.stopping.Load() && len(l.conns) == 0 && len(l.adoptCh) == 0 {
				return
			}
		}
	}
}

// wait returns the next events. With erc, it polls without blocking
// and, when nothing is ready, parks the goroutine in Go's netpoller until
// the loop's epoll descriptor is: a thread blocked in epoll_wait holds
// its P in a system call, which the runtime's sysmon takes back after
// 20 µs whenever no other P is idle (with as many loops as Ps, always),
// waking threads and keeping sysmon itself awake at 20 µs.
func (l *evLoop) wait() (int, error) {
	if l.erc == nil {
		return unix.EpollWait(l.epfd, l.events[:], 1000)
	}
	now := time.Now()
	if l.deadline.Sub(now) <= 0 {
		l.deadline = now.Add(time.Second)
		l.epf.SetReadDeadline(l.deadline)
	}
	// The poll runs inside Read's callback: Read clears the descriptor's
	// readiness before the first call, so an edge between a poll made
	// before Read and its wait would be lost (and the loop stall until
	// the deadline).
	l.polled, l.pollErr, l.polls = 0, 0, 0
	err := l.erc.Read(l.pollFn)
	l.parked.Store(false)
	if l.pollErr != 0 {
		return 0, l.pollErr
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, err
	}
	return l.polled, nil
}

// poll is wait's callback (a method value made once: a closure per wait
// would allocate).
func (l *evLoop) poll(uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
		uintptr(len(l.events)), 0, 0, 0)
	if e == unix.EINTR {
		return false
	}
	l.polls++
	l.polled, l.pollErr = int(r), e
	if r == 0 && e == 0 {
		l.parked.Store(true) // Read parks the goroutine next
		return false
	}
	return true // stop's eventfd write is an event
}

// woke runs when the loop's goroutine resumed from the netpoller. Go
// has one thread blocked in the netpoller at a time; the one that
// returned from it with this loop's descriptor ready now runs this loop,
// and no thread watches the netpoller for the other loops until this one
// parks again (or sysmon polls, every 10 ms at most): a loop whose
// descriptor turns ready meanwhile waits, though its P is idle, and the
// loops run one after the other on one thread. While another loop is
// parked, readying the nudger starts a thread for an idle P, which
// blocks in the netpoller in its turn.
func (l *evLoop) woke(g *evGroup) {
	for _, o := range g.loops {
		if o != l && o.parked.Load() {
			select {
			case g.nudge <- struct{}{}:
				g.nudges.Add(1)
			default: // one is pending already
			}
			return
		}
	}
}

func (l *evLoop) adoptPending() {
	for {
		select {
		case a := <-l.adoptCh:
			l.newConn(a)
		default:
			return
		}
	}
}

func (l *evLoop) register(fd int, it evItem) error {
	for fd >= len(l.items) {
		l.items = append(l.items, make([]evItem, len(l.items)+64)...)
	}
	ev := unix.EpollEvent{Events: uint32(evFlags), Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.items[fd] = it
	return nil
}

// forget takes fd out of the loop before it is closed or handed over.
func (l *evLoop) forget(fd int) {
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	if fd < len(l.items) {
		l.items[fd] = evItem{}
	}
}

// sweep enforces the timeouts, about once a second (epoll_wait's
// timeout), and shutdown.
func (l *evLoop) sweep() {
	l.swept = l.now
	cfg := &l.s.in.cfg
	stopping, forced := l.stopping.Load(), l.forced.Load()
	for c := range l.conns {
		switch {
		case forced:
			c.abort()
		case c.phase == phIdle && c.n == 0:
			if stopping || l.now.Sub(c.active) >= cfg.IdleTimeout {
				c.close()
			}
		case c.phase == phIdle:
			// A head begun: the slow-loris bound from its first byte.
			if l.now.Sub(c.headStart) >= cfg.ReadHeaderTimeout {
				c.close()
			}
		default:
			c.sweepRequest()
		}
	}
	for b, list := range l.idle {
		gone := forced || l.s.in.pool.lookup(b.addr) != b
		keep := list[:0]
		for _, u := range list {
			if u.dead {
				continue
			}
			if gone || u.cuts != b.cuts.Load() || l.now.Sub(u.idleFrom) >= l.upIdleLimit {
				u.close()
				continue
			}
			keep = append(keep, u)
		}
		if len(keep) == 0 {
			delete(l.idle, b)
		} else {
			l.idle[b] = keep
		}
	}
}

// close ends the loop: what is left is closed.
func (l *evLoop) close() {
	l.mu.Lock()
	l.exited = true
	l.mu.Unlock()
	l.adoptPending()
	for c := range l.conns {
		c.abort()
	}
	for _, list := range l.idle {
		for _, u := range list {
			u.close()
		}
	}
	clear(l.idle)
	if l.epf != nil {
		l.epf.Close()
	} else {
		unix.Close(l.epfd)
	}
	unix.Close(l.wakeFd)
}

// sockaddr is a container address as connect(2) takes it; false when it
// is not an IP literal (the goroutine path's dialer resolves those).
func (l *evLoop) sockaddr(addr string) (unix.Sockaddr, bool) {
	if sa, ok := l.addrs[addr]; ok {
		return sa, sa != nil
	}
	var sa unix.Sockaddr
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if ap.Addr().Is4() || ap.Addr().Is4In6() {
			sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
		} else if ap.Addr().Zone() == "" {
			sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		}
	}
	if len(l.addrs) > 4096 {
		clear(l.addrs) // bounded: addresses of gone containers
	}
	l.addrs[addr] = sa
	return sa, sa != nil
}

// rawRead and rawWrite are read(2) and write(2) without the runtime's
// syscall bookkeeping: the descriptors are non-blocking, so the calls
// never block the thread.
func rawRead(fd int, p []byte) (int, unix.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

func rawWrite(fd int, p []byte) (int, unix.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// rawWritev writes a then b in one call.
func rawWritev(fd int, iov *[2]unix.Iovec, a, b []byte) (int, unix.Errno) {
	if len(a) == 0 {
		return rawWrite(fd, b)
	}
	if len(b) == 0 {
		return rawWrite(fd, a)
	}
	iov[0].Base, iov[1].Base = &a[0], &b[0]
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), 2)
	iov[0].Base, iov[1].Base = nil, nil
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}
