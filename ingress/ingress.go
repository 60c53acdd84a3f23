package ingress

import (
	"context"
	"crypto/ecdh"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// Config configures an ingress. MachineID, State and SealKey are
// required; the rest has defaults.
type Config struct {
	MachineID string
	State     State
	// Reach is gossip liveness; nil treats every machine as reachable.
	Reach Reachability
	// Dial reaches containers and other ingress machines; nil dials
	// directly (kernel mode, where the mesh is a host interface).
	Dial DialFunc

	// HTTPAddr and HTTPSAddr are where to listen; ":80" and ":443" by
	// default. "-" turns the listener off.
	HTTPAddr, HTTPSAddr string
	// Listen opens HTTPAddr and HTTPSAddr; nil is net.Listen. The agent's
	// hands the sockets over across an upgrade's re-exec (agent/handover.go).
	Listen func(network, addr string) (net.Listener, error)
	// MeshHTTPListener, when set, also serves plain HTTP (challenges
	// forwarded by other ingress machines) on the mesh address: in
	// netstack mode that address exists only inside the agent.
	MeshHTTPListener net.Listener
	// PeerAddr is where another ingress machine answers HTTP or HTTPS
	// (for forwarded challenges); by default its mesh address
	// (its subnet's MachineAddr) and this machine's own port.
	PeerAddr func(machineID string, https bool) (string, error)

	// Policy is RoundRobin (default) or LeastConnections.
	Policy string
	// FailTimeout is how long a container that refused or failed a
	// request is put aside (default 10 s).
	FailTimeout time.Duration

	MaxHeaderBytes    int           // default 64 KiB
	MaxBodyBytes      int64         // default 100 MiB; larger bodies get 413
	ReadHeaderTimeout time.Duration // default 10 s: a slow-loris client is cut off
	ReadTimeout       time.Duration // whole request including body; default 0 (none: uploads may be long)
	IdleTimeout       time.Duration // keep-alive between requests, default 2 min
	// ResponseTimeout bounds a container's answer, as nginx's
	// proxy_read_timeout and haproxy's `timeout server` do (default
	// 60 s, theirs): the wait from the request's end (body included) to
	// the response head, answered 504 when nothing went to the client
	// yet (not retried elsewhere: the request may have had effects), and
	// any wait for the next bytes of the response body, which cuts the
	// client connection. Waits on a slow client do not count; upgraded
	// connections (websockets) are tunnels, not bounded by it. The event
	// loops check it once a second.
	ResponseTimeout time.Duration

	// NetHTTPOnly serves every request through net/http, without the
	// fast path of fastserve.go (for comparison and as a way out).
	NetHTTPOnly bool
	// NoEventLoop serves plain HTTP's fast path with a goroutine per
	// connection instead of the epoll loops of evloop_linux.go (for
	// comparison and tests of both paths).
	NoEventLoop bool

	// AccessLog, when set, gets one record per request.
	AccessLog *slog.Logger
	// Metrics, when set, count requests and latency per host.
	Metrics *Metrics
	Log     *slog.Logger

	ACME ACMEConfig
	// Certificates are served as they are, besides ACME's (e.g. a
	// certificate from a company CA); ACME does not order names they
	// cover.
	Certificates []tls.Certificate
	// SealKey is this machine's sealing key (sealing.KeyFromSeed of its
	// identity seed): certificate storage is sealed for the public keys
	// of the ingress machines' records and opened with this.
	SealKey *ecdh.PrivateKey
	// Secrets are the network secret(s), the current one first: they
	// only open certificate storage written in the older format (sealed
	// for every member), which is then re-sealed. Optional.
	Secrets func() [][]byte
}

func (c *Config) defaults() error {
	if c.MachineID == "" || c.State == nil {
		return errors.New("ingress: MachineID and State are required")
	}
	if c.SealKey == nil {
		return errors.New("ingress: a sealing key for the certificate storage is required")
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":80"
	}
	if c.HTTPSAddr == "" {
		c.HTTPSAddr = ":443"
	}
	switch c.Policy {
	case "":
		c.Policy = RoundRobin
	case RoundRobin, LeastConnections:
	default:
		return fmt.Errorf("ingress: balancing policy %q: use %s or %s", c.Policy, RoundRobin, LeastConnections)
	}
	if c.FailTimeout <= 0 {
		c.FailTimeout = 10 * time.Second
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 100 << 20
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = 60 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Ingress is a running proxy.
type Ingress struct {
	cfg   Config
	log   *slog.Logger
	table atomic.Pointer[table]
	pool  *pool
	fwd   *forwarder
	certs *certManager

	mu      sync.Mutex
	v       view
	issuers atomic.Pointer[[]string] // live ingress machines, for issuerFor

	rebuild chan struct{}
	httpLn  net.Listener
	tlsLn   net.Listener
	servers []*http.Server
	fast    []*fastServer

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start listens and serves until ctx ends or Close is called.
func Start(ctx context.Context, cfg Config) (_ *Ingress, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	in := &Ingress{
		cfg: cfg, log: cfg.Log, pool: newPool(), cancel: cancel,
		rebuild: make(chan struct{}, 1),
		v: view{self: cfg.MachineID, services: map[string]*record.Service{},
			containers: map[string]*record.Container{}, machines: map[string]*record.Machine{},
			revoked: map[string]bool{}},
	}
	defer func() {
		if err != nil {
			in.Close()
		}
	}()
	in.fwd = newForwarder(cfg.Dial, in.pool, cfg.Policy, cfg.FailTimeout, cfg.ResponseTimeout, cfg.Log)
	in.table.Store(&table{exact: map[string][]*Route{}, wildcard: map[string][]*Route{}})
	in.issuers.Store(&[]string{cfg.MachineID})
	listen := cfg.Listen
	if listen == nil {
		listen = net.Listen
	}
	if cfg.HTTPAddr != "-" {
		if in.httpLn, err = listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("ingress: listen for http on %s: %w", cfg.HTTPAddr, err)
		}
	}
	if cfg.HTTPSAddr != "-" {
		if in.tlsLn, err = listen("tcp", cfg.HTTPSAddr); err != nil {
			return nil, fmt.Errorf("ingress: listen for https on %s: %w", cfg.HTTPSAddr, err)
		}
	}
	if in.certs, err = newCertManager(ctx, in); err != nil {
		return nil, err
	}
	if in.httpLn != nil {
		in.serve(in.httpLn, http.HandlerFunc(in.serveHTTP), nil)
	}
	if cfg.MeshHTTPListener != nil {
		in.serve(cfg.MeshHTTPListener, http.HandlerFunc(in.serveHTTP), nil)
	}
	if in.tlsLn != nil {
		in.serve(recordingListener{in.tlsLn}, http.HandlerFunc(in.serveHTTPS), in.certs.tlsConfig())
	}

	in.wg.Add(6)
	go in.watch(ctx, record.RevokedPrefix)
	go in.watch(ctx, record.ServicesPrefix)
	go in.watch(ctx, record.ContainersPrefix)
	go in.watch(ctx, record.MachinesPrefix)
	go in.watch(ctx, record.CertsPrefix)
	go in.rebuilder(ctx)
	in.log.Info("ingress up", "http", addrOf(in.httpLn), "https", addrOf(in.tlsLn), "policy", cfg.Policy,
		"acme", in.certs.directory())
	return in, nil
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return "off"
	}
	return ln.Addr().String()
}

// HTTPAddr and HTTPSAddr are the bound listen addresses (nil when off).
func (in *Ingress) HTTPAddr() net.Addr {
	if in.httpLn == nil {
		return nil
	}
	return in.httpLn.Addr()
}

func (in *Ingress) HTTPSAddr() net.Addr {
	if in.tlsLn == nil {
		return nil
	}
	return in.tlsLn.Addr()
}

func (in *Ingress) serve(ln net.Listener, h http.Handler, tc *tls.Config) {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		MaxHeaderBytes:    in.cfg.MaxHeaderBytes,
		ReadHeaderTimeout: in.cfg.ReadHeaderTimeout,
		ReadTimeout:       in.cfg.ReadTimeout,
		IdleTimeout:       in.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(in.log.Handler(), slog.LevelDebug),
	}
	in.wg.Add(1)
	if !in.cfg.NetHTTPOnly {
		fs := newFastServer(in, ln, tc, srv)
		in.fast = append(in.fast, fs)
		go func() {
			defer in.wg.Done()
			if err := fs.serve(); err != nil && !errors.Is(err, net.ErrClosed) {
				in.log.Error("ingress listener stopped", "addr", ln.Addr(), "err", err)
			}
		}()
		return
	}
	in.servers = append(in.servers, srv)
	go func() {
		defer in.wg.Done()
		var err error
		if tc != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			in.log.Error("ingress listener stopped", "addr", ln.Addr(), "err", err)
		}
	}()
}

// Close stops listening, lets in-flight requests finish for a few
// seconds, then stops. A second call returns the first one's result.
func (in *Ingress) Close() error {
	in.closeOnce.Do(func() { in.closeErr = in.close() })
	return in.closeErr
}

func (in *Ingress) close() error {
	in.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, s := range in.fast {
		if err := s.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range in.servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, s.Close())
		}
	}
	for _, ln := range []net.Listener{in.httpLn, in.tlsLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if in.certs != nil {
		in.certs.stop()
	}
	in.wg.Wait()
	if in.fwd != nil {
		in.fwd.up.closeIdle()
	}
	return errors.Join(errs...)
}

// watch keeps one prefix of the view current from the store's watch
// stream, and asks for a rebuild on every change.
func (in *Ingress) watch(ctx context.Context, prefix string) {
	defer in.wg.Done()
	for ctx.Err() == nil {
		changes, err := in.cfg.State.Watch(ctx, prefix)
		if err != nil {
			in.log.Error("ingress: watch state", "prefix", prefix, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for ch := range changes {
			if prefix == record.CertsPrefix {
				switch ch.Type {
				case crdt.Updated, crdt.SnapshotDone:
					in.certs.storageChanged(ch.Key)
				case crdt.Deleted:
					// A deleted ACME account releases the re-issues held
					// back for it (reseal.go): without a pass now they
					// waited for the next half-minute tick.
					in.certs.membershipChanged()
				}
				continue
			}
			in.apply(prefix, ch)
		}
	}
}

func (in *Ingress) apply(prefix string, ch crdt.Change) {
	in.mu.Lock()
	switch ch.Type {
	case crdt.Resync:
		switch prefix {
		case record.ServicesPrefix:
			clear(in.v.services)
		case record.ContainersPrefix:
			clear(in.v.containers)
		case record.MachinesPrefix:
			clear(in.v.machines)
		case record.RevokedPrefix:
			clear(in.v.revoked)
		}
	case crdt.Deleted:
		delete(in.v.services, strings.TrimPrefix(ch.Key, record.ServicesPrefix))
		delete(in.v.containers, ch.Key)
		delete(in.v.machines, strings.TrimPrefix(ch.Key, record.MachinesPrefix))
		// The revoked set is add-only: a deletion there is ignored.
	case crdt.Snapshot, crdt.Updated:
		switch r := ch.Record.(type) {
		case *record.Service:
			in.v.services[r.Name] = r
		case *record.Container:
			in.v.containers[ch.Key] = r
		case *record.Machine:
			in.v.machines[r.ID] = r
		case *record.Revoked:
			in.v.revoked[r.MachineID] = true
		}
	}
	in.mu.Unlock()
	if ch.Type != crdt.Snapshot {
		in.poke()
	}
	if prefix == record.MachinesPrefix || prefix == record.RevokedPrefix {
		in.certs.membershipChanged()
	}
}

func (in *Ingress) poke() {
	select {
	case in.rebuild <- struct{}{}:
	default:
	}
}

// rebuilder swaps in a new route table after each burst of changes.
func (in *Ingress) rebuilder(ctx context.Context) {
	defer in.wg.Done()
	var reach <-chan struct{}
	if in.cfg.Reach != nil {
		reach = in.cfg.Reach.Changed()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.rebuild:
		case <-reach:
		}
		// Let a burst (a deploy writes several records) settle briefly;
		// well inside the one-second promise.
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		in.rebuildNow()
	}
}

func (in *Ingress) rebuildNow() {
	old := in.table.Load()
	in.mu.Lock()
	t := buildTable(in.v, in.cfg.Reach, in.pool, in.log)
	live := slices.DeleteFunc(liveIngress(in.v.machines, in.cfg.MachineID, in.cfg.Reach),
		func(id string) bool { return in.v.revoked[id] })
	in.mu.Unlock()
	for _, r := range t.routes {
		r.handler = in.fwd.handlerFor(r, in.cfg.MaxBodyBytes)
	}
	in.issuers.Store(&live)
	in.table.Store(t)
	in.certs.reconcile(t)
	// Containers on machines that just became unreachable: their
	// connections hang, so cut them (a removed record, by contrast,
	// lets in-flight requests finish).
	for _, r := range old.routes {
		for _, b := range r.Backends {
			if b.machineID != in.cfg.MachineID && in.cfg.Reach != nil && !in.cfg.Reach.Reachable(b.machineID) {
				if n := b.closeConns(); n > 0 {
					in.log.Warn("machine unreachable: connections to its container cut", "container", b.name,
						"machine", b.machineID, "connections", n)
				}
			}
		}
	}
}

// issuerOf is the machine that orders certificates for name.
func (in *Ingress) issuerOf(name string) string {
	return issuerFor(strings.ToLower(name), *in.issuers.Load())
}

// peerAddr is where machine id answers HTTP or HTTPS (for forwarded
// challenges).
func (in *Ingress) peerAddr(id string, https bool) (string, error) {
	if in.cfg.PeerAddr != nil {
		return in.cfg.PeerAddr(id, https)
	}
	in.mu.Lock()
	m := in.v.machines[id]
	in.mu.Unlock()
	if m == nil {
		return "", fmt.Errorf("machine %s has no record here", id)
	}
	p, err := netip.ParsePrefix(m.Subnet)
	if err != nil || !p.Addr().Is4() {
		return "", fmt.Errorf("machine %s: subnet %q: not an IPv4 prefix", id, m.Subnet)
	}
	a := p.Addr().As4()
	a[3] = 1
	port, ln := "80", in.httpLn
	if https {
		port, ln = "443", in.tlsLn
	}
	if ln != nil {
		_, port, _ = net.SplitHostPort(ln.Addr().String())
	}
	return net.JoinHostPort(netip.AddrFrom4(a).String(), port), nil
}

// httpsPort is the public HTTPS port, for redirects.
func (in *Ingress) httpsPort() int {
	if in.tlsLn == nil {
		return 443
	}
	if a, ok := in.tlsLn.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 443
}

func portSuffix(port, def int) string {
	if port == def {
		return ""
	}
	return ":" + strconv.Itoa(port)
}
