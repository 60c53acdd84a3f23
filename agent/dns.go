package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/resolver"
	"github.com/uncloud-mesh/uncloud/tun"
)

// DNSPort is where the resolver answers, on the mesh address.
const DNSPort = 53

// dnsUpstreamsEnv overrides the upstream resolvers (comma-separated IP or
// IP:port); by default they come from /etc/resolv.conf.
const dnsUpstreamsEnv = "UNCLOUD_DNS_UPSTREAMS"

// dnsService is the running resolver of the daemon.
type dnsService struct {
	idx    *resolver.Index
	srv    *resolver.Server
	mu     sync.Mutex
	listen []string
}

// startDNS starts the resolver: it follows the state, answers on the mesh
// address (in the netstack too in netstack mode) and, in netstack mode, on
// the host's mesh address for local containers once that address exists
// there (the container bridge's gateway). It never listens on public
// interfaces. Failing to listen is logged, not fatal: the mesh works
// without its DNS.
func (d *Daemon) startDNS(ctx context.Context) error {
	idx := resolver.NewIndex(d.state.MachineID, d.reach.view(ctx), d.log.With("component", "dns"))
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := idx.Run(ctx, d.store); err != nil && ctx.Err() == nil {
			d.log.Error("dns index stopped", "err", err)
		}
	}()
	mesh := d.state.MeshAddress()
	var ups []string
	if v := os.Getenv(dnsUpstreamsEnv); v != "" {
		ups = strings.Split(v, ",")
	}
	// Mesh machines, local containers (they are in this machine's /24)
	// and local programs; nobody else, whatever interface a packet for
	// the mesh address arrives on.
	allow := []netip.Prefix{meshaddr.Mesh(), netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128")}
	srv, err := resolver.NewServer(resolver.Config{Index: idx, Upstreams: ups, Allow: allow,
		Exclude: []netip.Addr{mesh}, Logger: d.log.With("component", "dns")})
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	svc := &dnsService{idx: idx, srv: srv}
	d.dns.Store(svc)

	addr := netip.AddrPortFrom(mesh, DNSPort).String()
	if d.dev.Mode() == tun.ModeNetstack {
		pc, err := d.dev.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return fmt.Errorf("dns: listen in the netstack on %s: %w", addr, err)
		}
		ln, err := d.dev.Listen(ctx, "tcp", addr)
		if err != nil {
			pc.Close()
			return fmt.Errorf("dns: listen in the netstack on %s: %w", addr, err)
		}
		svc.serve(d, ctx, "netstack "+addr, []net.PacketConn{pc}, ln)
		// The host side, for containers on this machine's bridge.
		d.wg.Add(1)
		go func() { defer d.wg.Done(); svc.listenHostWhenReady(d, ctx, addr) }()
	} else if err := svc.listenHost(d, ctx, addr); err != nil {
		d.log.Error("dns: not serving on the mesh address", "addr", addr, "err", err)
	}
	return nil
}

// listenHost serves on a host address: one UDP socket per core sharing
// the port (SO_REUSEPORT), and TCP.
func (s *dnsService) listenHost(d *Daemon, ctx context.Context, addr string) error {
	pcs, err := resolver.ListenUDP(ctx, addr, resolver.UDPSockets())
	if err != nil {
		return err
	}
	ln, err := resolver.ListenTCP(ctx, addr)
	if err != nil {
		for _, pc := range pcs {
			pc.Close()
		}
		return err
	}
	s.serve(d, ctx, addr, pcs, ln)
	return nil
}

// listenHostWhenReady retries the host address until it exists (the
// runtime creates the bridge that holds it) or the daemon stops. Without
// the privilege to bind port 53 it gives up at once.
func (s *dnsService) listenHostWhenReady(d *Daemon, ctx context.Context, addr string) {
	logged := false
	for {
		err := s.listenHost(d, ctx, addr)
		if err == nil {
			return
		}
		if errors.Is(err, os.ErrPermission) {
			d.log.Info("dns: no permission to serve on the host; containers here cannot use the mesh DNS", "addr", addr)
			return
		}
		if !logged {
			d.log.Info("dns: host address not there yet; retrying every 10 s", "addr", addr, "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func (s *dnsService) serve(d *Daemon, ctx context.Context, where string, pcs []net.PacketConn, ln net.Listener) {
	for _, pc := range pcs {
		d.goServe("dns udp "+where, func() error { return s.srv.ServePacket(ctx, pc) })
	}
	d.goServe("dns tcp "+where, func() error { return s.srv.ServeStream(ctx, ln) })
	s.mu.Lock()
	s.listen = append(s.listen, where)
	s.mu.Unlock()
	d.log.Info("dns serving", "addr", where, "udp sockets", len(pcs))
}

// DNSNames implements api.DNSBackend.
func (d *Daemon) DNSNames(ctx context.Context) (api.DNSNames, error) {
	svc := d.dns.Load()
	if svc == nil {
		return api.DNSNames{}, fmt.Errorf("%w: the resolver is not running", api.ErrUnavailable)
	}
	svc.mu.Lock()
	out := api.DNSNames{Listen: append([]string(nil), svc.listen...), Upstreams: svc.srv.Upstreams()}
	svc.mu.Unlock()
	for _, n := range svc.idx.Names() {
		out.Names = append(out.Names, api.DNSName{Name: n.Name, Type: n.Type, Records: n.Records, Project: n.Project})
	}
	return out, nil
}

// DNSQuery implements api.DNSBackend.
func (d *Daemon) DNSQuery(ctx context.Context, name, qtype string) (api.DNSAnswer, error) {
	svc := d.dns.Load()
	if svc == nil {
		return api.DNSAnswer{}, fmt.Errorf("%w: the resolver is not running", api.ErrUnavailable)
	}
	if qtype == "" {
		qtype = "A"
	}
	t, ok := dns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		if n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(qtype), "TYPE"), 10, 16); err == nil {
			t = uint16(n)
		} else {
			return api.DNSAnswer{}, fmt.Errorf("%w: %q is not a DNS record type (A, AAAA, SRV, PTR, ...)", api.ErrBadRequest, qtype)
		}
	}
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		return api.DNSAnswer{}, fmt.Errorf("%w: %q is not a domain name", api.ErrBadRequest, name)
	}
	r, err := svc.srv.Query(ctx, name, t)
	if err != nil {
		return api.DNSAnswer{}, err
	}
	out := api.DNSAnswer{Rcode: dns.RcodeToString[r.Rcode]}
	for _, rr := range r.Answer {
		out.Answer = append(out.Answer, rr.String())
	}
	for _, rr := range r.Ns {
		out.Authority = append(out.Authority, rr.String())
	}
	for _, rr := range r.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			out.Additional = append(out.Additional, rr.String())
		}
	}
	return out, nil
}
