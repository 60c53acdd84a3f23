package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Device is what the manager needs of the mesh device (tun.Device).
type Device interface {
	Mode() tun.Mode
	SetExposed([]tun.ExposedPort) error
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Runtime is what Start wires the settings to.
type Runtime struct {
	Device Device
	// Resolve answers *.internal names from the agent's own zone; the
	// proxies resolve nothing else.
	Resolve func(ctx context.Context, name string) ([]netip.Addr, error)
	// OnChange is called after a change took effect and was saved (the
	// agent republishes the exposed ports in its gossip metadata).
	OnChange func(Settings)

	// Forward, when set, forwards the exposed ports instead of the
	// device (rootless mode: the device is a kernel TUN inside
	// rootlesskit's namespace, and the host's ports are reached through
	// agent/rootless's host-side helper).
	Forward Forwarder
	// Listen, when set, opens the proxies' listeners instead of
	// net.Listen (rootless mode: sockets the agent's starter opened on
	// the host's network before entering the namespace).
	Listen func(addr string) (net.Listener, error)
	// FixedProxies, when set, says why the proxies' addresses cannot
	// change while the agent runs; such a change is refused with it.
	FixedProxies error
}

// Forwarder forwards mesh connections to exposed host ports.
type Forwarder interface {
	SetExposed([]tun.ExposedPort) error
}

// forwarder is what forwards the exposed ports; nil in kernel mode,
// where nothing does.
func (rt Runtime) forwarder() Forwarder {
	if rt.Forward != nil {
		return rt.Forward
	}
	if rt.Device != nil && rt.Device.Mode() == tun.ModeNetstack {
		return rt.Device
	}
	return nil
}

// Manager holds a machine's settings while its agent runs: it keeps the
// file, the device's exposed ports and the proxies' listeners in step.
type Manager struct {
	dataDir  string
	reserved []tun.ExposedPort
	log      *slog.Logger

	mu       sync.Mutex // serialises changes; guards what follows
	settings Settings
	unsaved  bool // the start flags changed settings not yet saved
	rt       Runtime
	ctx      context.Context // the agent's lifetime; nil until Start
	proxies  map[proxyKind]*proxy
	closed   bool
}

// proxyKind names a proxy in logs and status.
type proxyKind string

const (
	kindSOCKS5 proxyKind = "SOCKS5"
	kindHTTP   proxyKind = "HTTP proxy"
)

func (k proxyKind) addr(s Settings) string {
	if k == kindSOCKS5 {
		return s.SOCKS5
	}
	return s.HTTPProxy
}

func (k proxyKind) serve() func(context.Context, net.Listener, *tun.MeshDialer, *slog.Logger) error {
	if k == kindSOCKS5 {
		return tun.ServeSOCKS5
	}
	return tun.ServeHTTPProxy
}

// proxy is one proxy: serving, or the reason it is not.
type proxy struct {
	addr   string
	err    error // why it is not serving (listen failed, or stopped)
	cancel context.CancelFunc
	done   chan struct{}
}

// Open reads the settings in dataDir and applies the agent's start flags
// to them: --expose adds ports, --socks5 and --http-proxy replace the
// addresses ("off" clears one); what no flag names stays as stored. The
// result is saved by Start, once the agent got that far: a second agent
// started by mistake on the same data dir (it fails to bring the mesh
// up) does not change the running one's file.
func Open(dataDir string, flags Change, reserved []tun.ExposedPort, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	s, err := Load(dataDir)
	if err != nil {
		return nil, err
	}
	if !flags.Empty() {
		if s, err = s.Apply(flags, reserved); err != nil {
			return nil, fmt.Errorf("flags: %w", err)
		}
	}
	return &Manager{dataDir: dataDir, reserved: reserved, log: log.With("component", "hostnet"),
		settings: s, unsaved: !flags.Empty(), proxies: map[proxyKind]*proxy{}}, nil
}

// Settings are the settings as they are now.
func (m *Manager) Settings() Settings {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settings
}

// Start starts the proxies (a listener that fails is logged and shown in
// Status, and the agent runs on without it) until ctx ends or Close. The
// device was opened with Settings().Expose.
func (m *Manager) Start(ctx context.Context, rt Runtime) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctx, m.rt = ctx, rt
	if m.unsaved {
		if err := m.settings.Save(m.dataDir); err != nil {
			m.log.Error("the start flags' settings are in effect but not saved", "err", err)
		}
		m.unsaved = false
	}
	if rt.Forward != nil {
		if err := rt.Forward.SetExposed(m.settings.Expose); err != nil {
			m.log.Error("exposed ports not forwarded", "expose", FormatPorts(m.settings.Expose), "err", err)
		}
	} else if len(m.settings.Expose) > 0 && rt.Device.Mode() != tun.ModeNetstack {
		m.log.Warn("exposed ports are not forwarded in kernel mode: the mesh reaches this host's ports through the interface, as its firewall allows",
			"expose", FormatPorts(m.settings.Expose))
	}
	for _, k := range []proxyKind{kindSOCKS5, kindHTTP} {
		if addr := k.addr(m.settings); addr != "" {
			p := m.startProxy(k, addr)
			if p.err != nil {
				m.log.Error(string(k)+" not serving", "listen", addr, "err", p.err)
			}
			m.proxies[k] = p
		}
	}
	m.log.Info("host networking", "mode", rt.Device.Mode(), "expose", FormatPorts(m.settings.Expose),
		"socks5", orOff(m.settings.SOCKS5), "http_proxy", orOff(m.settings.HTTPProxy))
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

// startProxy listens on addr and serves; a failed listen is the proxy's
// err. Called with m.mu held.
func (m *Manager) startProxy(k proxyKind, addr string) *proxy {
	var ln net.Listener
	var err error
	if m.rt.Listen != nil {
		ln, err = m.rt.Listen(addr)
	} else {
		var lc net.ListenConfig
		ln, err = lc.Listen(m.ctx, "tcp", addr)
	}
	if err != nil {
		return &proxy{addr: addr, err: fmt.Errorf("listen on %s: %w", addr, err)}
	}
	ctx, cancel := context.WithCancel(m.ctx)
	p := &proxy{addr: addr, cancel: cancel, done: make(chan struct{})}
	d := &tun.MeshDialer{Domain: "internal", Resolve: m.rt.Resolve, Dial: m.rt.Device.DialContext}
	log := m.log.With("proxy", string(k))
	go func() {
		defer close(p.done)
		if err := k.serve()(ctx, ln, d, log); err != nil && ctx.Err() == nil {
			log.Error(string(k)+" stopped", "listen", addr, "err", err)
		}
	}()
	if IsLoopback(ln.Addr().String()) {
		m.log.Info(string(k)+" into the mesh", "listen", ln.Addr())
	} else {
		m.log.Warn(string(k)+" into the mesh on a non-loopback address: whoever reaches it reaches the mesh as this machine", "listen", ln.Addr())
	}
	return p
}

// stop ends a proxy and waits for it.
func (p *proxy) stop() {
	if p == nil || p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

// Update applies a change at runtime: the exposed ports at once (a port
// removed is closed, with its connections), proxies stopped, started or
// moved; then the file is saved. If any step fails, what was done is
// undone and the error says why; nothing is saved.
func (m *Manager) Update(ctx context.Context, c Change) (Settings, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil || m.closed {
		return Settings{}, fmt.Errorf("%w: host networking is not running", api.ErrUnavailable)
	}
	old := m.settings
	next, err := old.Apply(c, m.reserved)
	if err != nil {
		return old, err
	}
	if m.rt.FixedProxies != nil && (old.SOCKS5 != next.SOCKS5 || old.HTTPProxy != next.HTTPProxy) {
		return old, fmt.Errorf("%w: %w", api.ErrConflict, m.rt.FixedProxies)
	}
	exposeChanged := !slices.Equal(old.Expose, next.Expose)
	fw := m.rt.forwarder()
	if fw == nil {
		fw = m.rt.Device // kernel mode: it says why not
	}
	if exposeChanged {
		if err := fw.SetExposed(next.Expose); err != nil {
			if errors.Is(err, tun.ErrKernelMode) {
				return old, fmt.Errorf("%w: %v; exposed ports are for netstack machines", api.ErrConflict, err)
			}
			if m.rt.Forward != nil {
				return old, fmt.Errorf("%w: %v", api.ErrConflict, err)
			}
			return old, err
		}
	}
	undo := func() {}
	if exposeChanged {
		undo = func() {
			if err := fw.SetExposed(old.Expose); err != nil {
				m.log.Error("restore exposed ports", "err", err)
			}
		}
	}
	// Proxies the change names: a moved one is stopped before its new
	// listener opens (the port may be the same on another address), and
	// put back if that fails. Naming a proxy's address again retries a
	// listener that failed.
	type was struct {
		p       *proxy
		serving bool
	}
	replaced := map[proxyKind]was{}
	restore := func() {
		for k, w := range replaced {
			m.proxies[k].stop()
			if w.serving {
				m.proxies[k] = m.startProxy(k, w.p.addr)
			} else {
				m.proxies[k] = w.p
			}
		}
	}
	for _, k := range []proxyKind{kindSOCKS5, kindHTTP} {
		if (k == kindSOCKS5 && c.SOCKS5 == nil) || (k == kindHTTP && c.HTTPProxy == nil) {
			continue
		}
		addr, cur := k.addr(next), m.proxies[k]
		serving := cur != nil && cur.cancel != nil
		if (cur == nil && addr == "") || (cur != nil && addr == cur.addr && serving) {
			continue
		}
		replaced[k] = was{p: cur, serving: serving}
		cur.stop()
		if addr == "" {
			m.proxies[k] = nil
			continue
		}
		p := m.startProxy(k, addr)
		m.proxies[k] = p
		if p.err != nil {
			restore()
			undo()
			return old, fmt.Errorf("%w: %s: %v", api.ErrConflict, k, p.err)
		}
	}
	if err := next.Save(m.dataDir); err != nil {
		restore()
		undo()
		return old, err
	}
	for k, p := range m.proxies {
		if p == nil {
			delete(m.proxies, k)
		}
	}
	m.settings = next
	m.log.Info("host networking changed", "expose", FormatPorts(next.Expose),
		"socks5", orOff(next.SOCKS5), "http_proxy", orOff(next.HTTPProxy))
	if m.rt.OnChange != nil {
		m.rt.OnChange(next)
	}
	return next, nil
}

// ProxyState is one proxy's address and whether it serves.
type ProxyState struct {
	Listen  string
	Serving bool
	Error   string // why not
}

// Status is the settings and what runs of them.
type Status struct {
	Settings
	Mode tun.Mode
	// Forwarding says the exposed ports are forwarded (netstack or
	// rootless mode); in kernel mode they are only kept.
	Forwarding bool
	SOCKS5     ProxyState
	HTTPProxy  ProxyState
}

// Status reports the settings and the proxies' state.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Settings: m.settings}
	if m.rt.Device != nil {
		st.Mode = m.rt.Device.Mode()
	}
	st.Forwarding = m.rt.forwarder() != nil
	for _, k := range []proxyKind{kindSOCKS5, kindHTTP} {
		ps := ProxyState{Listen: k.addr(m.settings)}
		if p := m.proxies[k]; p != nil && ps.Listen != "" {
			ps.Serving = p.cancel != nil
			if p.err != nil {
				ps.Error = p.err.Error()
			}
		} else if ps.Listen != "" {
			ps.Error = "not started"
		}
		if k == kindSOCKS5 {
			st.SOCKS5 = ps
		} else {
			st.HTTPProxy = ps
		}
	}
	return st
}

// Close stops the proxies; safe to call more than once.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, p := range m.proxies {
		p.stop()
	}
	return nil
}
