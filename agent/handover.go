package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Handover passes the ingress's listening sockets from an agent process
// to the one that replaces it in an upgrade (a re-exec): the sockets stay
// open throughout, so a connection that arrives while no process accepts
// waits in the kernel's backlog instead of being refused. The new process
// accepts on them only once its ingress serves as many routes (each with
// a backend) as the old one did, so the waiting requests are not answered
// 404 by an ingress that has not read the state yet.
type Handover struct {
	mu        sync.Mutex
	inherited map[string]*os.File // by listen address: from the previous process, unclaimed
	live      map[string]*net.TCPListener
	routes    int           // routes the previous process served
	open      chan struct{} // closed when accepting may start
	openOnce  sync.Once
}

// handoverWait bounds how long a new process holds inherited connections
// while its ingress reads the state.
const handoverWait = 10 * time.Second

// NewHandover takes the sockets the previous process described in spec
// (FormatHandover's "routes=N;ADDR=FD;…"; "" for none).
func NewHandover(spec string) (*Handover, error) {
	h := &Handover{inherited: map[string]*os.File{}, live: map[string]*net.TCPListener{}, open: make(chan struct{})}
	if spec == "" {
		h.openOnce.Do(func() { close(h.open) })
		return h, nil
	}
	for _, part := range strings.Split(spec, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return h, fmt.Errorf("listener handover %q: %q is not KEY=VALUE", spec, part)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return h, fmt.Errorf("listener handover %q: %q is not a number", spec, v)
		}
		if k == "routes" {
			h.routes = n
			continue
		}
		if n < 3 {
			return h, fmt.Errorf("listener handover %q: fd %d is a standard stream", spec, n)
		}
		// Inherited without close-on-exec; set it again so children
		// (Docker helpers, the version check) do not hold the socket.
		unix.CloseOnExec(n)
		h.inherited[k] = os.NewFile(uintptr(n), "listener "+k)
	}
	if h.routes == 0 {
		h.openOnce.Do(func() { close(h.open) })
	}
	return h, nil
}

// Listen is net.Listen, but an address the previous process handed over
// is taken from it, and accepting waits for the gate.
func (h *Handover) Listen(network, addr string) (net.Listener, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ln net.Listener
	var err error
	if f, ok := h.inherited[addr]; ok && strings.HasPrefix(network, "tcp") {
		delete(h.inherited, addr)
		ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			ln, err = net.Listen(network, addr)
		}
	} else {
		ln, err = net.Listen(network, addr)
	}
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return ln, nil
	}
	h.live[addr] = tl
	return &gatedListener{TCPListener: tl, h: h, addr: addr, closed: make(chan struct{})}, nil
}

// waitRoutes opens the gate once routes() reaches the previous process's
// count, or after handoverWait.
func (h *Handover) waitRoutes(ctx context.Context, routes func() int) {
	select {
	case <-h.open:
		return
	default:
	}
	deadline := time.Now().Add(handoverWait)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for routes() < h.routes && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	h.openOnce.Do(func() { close(h.open) })
}

// Pass duplicates the live (and unclaimed inherited) sockets without
// close-on-exec, for the process that replaces this one, and describes
// them for NewHandover. Call it before the daemon stops (the ingress
// closes its listeners then); the duplicates keep the sockets open.
func (h *Handover) Pass(routes int) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	parts := []string{"routes=" + strconv.Itoa(routes)}
	add := func(addr string, fd int) error {
		nfd, err := unix.Dup(fd)
		if err != nil {
			return fmt.Errorf("duplicate the listener on %s: %w", addr, err)
		}
		// Dup's copy has no close-on-exec: it survives the exec.
		parts = append(parts, addr+"="+strconv.Itoa(nfd))
		return nil
	}
	for addr, tl := range h.live {
		rc, err := tl.SyscallConn()
		if err != nil {
			continue // closed: the role went away
		}
		var derr error
		if err := rc.Control(func(fd uintptr) { derr = add(addr, int(fd)) }); err != nil || derr != nil {
			continue
		}
	}
	for addr, f := range h.inherited {
		if err := add(addr, int(f.Fd())); err != nil {
			return "", err
		}
	}
	return strings.Join(parts, ";"), nil
}

// gatedListener holds Accept until the handover's gate opens, and leaves
// the live set when closed.
type gatedListener struct {
	*net.TCPListener
	h      *Handover
	addr   string
	closed chan struct{}
	once   sync.Once
}

func (g *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-g.h.open:
	case <-g.closed:
	}
	return g.TCPListener.Accept()
}

func (g *gatedListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	g.h.mu.Lock()
	if g.h.live[g.addr] == g.TCPListener {
		delete(g.h.live, g.addr)
	}
	g.h.mu.Unlock()
	return g.TCPListener.Close()
}

// listenFunc is h.Listen, or nil (net.Listen) without a handover.
func (h *Handover) listenFunc() func(network, addr string) (net.Listener, error) {
	if h == nil {
		return nil
	}
	return h.Listen
}

// PassOn is Pass with the route count this process inherited, for a
// process that gives up before its ingress serves (a failed start).
func (h *Handover) PassOn() (string, error) { return h.Pass(h.routes) }
