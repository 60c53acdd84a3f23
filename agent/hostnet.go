package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/uncloud-mesh/uncloud/agent/hostnet"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/tun"
)

// ReservedPorts are the agent's own ports on the mesh address, which an
// exposed port would never reach in netstack mode (the agent's listeners
// inside the netstack take those connections first). An ingress machine's
// 80 and 443 are the same while it has the role.
func ReservedPorts() []tun.ExposedPort {
	return []tun.ExposedPort{
		{Port: DNSPort, Proto: "tcp"}, {Port: DNSPort, Proto: "udp"},
		{Port: GossipPort, Proto: "tcp"}, {Port: GossipPort, Proto: "udp"},
		{Port: tun.DefaultJoinPort, Proto: "tcp"},
		{Port: MachineAPIPort, Proto: "tcp"},
	}
}

// startHostNet starts the proxies into the mesh; the device was opened
// with the exposed ports. After startDNS: the proxies resolve names there.
func (d *Daemon) startHostNet(ctx context.Context) {
	rt := hostnet.Runtime{Device: d.dev, Resolve: d.resolveInternal, OnChange: d.hostNetChanged}
	if d.mode() == ModeRootless {
		d.rootlessHostNet(ctx, &rt)
	}
	d.hostnet.Start(ctx, rt)
	d.life.stopAccepting(d.hostnet.Close)
}

// resolveInternal answers a *.internal name from this machine's own zone
// (the resolver, in-process), never the host's resolvers: the proxies
// reach the mesh by the names the mesh gives.
func (d *Daemon) resolveInternal(ctx context.Context, name string) ([]netip.Addr, error) {
	svc := d.dns.Load()
	if svc == nil {
		return nil, fmt.Errorf("the resolver is not running")
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("%q is not a domain name", name)
	}
	r, err := svc.srv.Query(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, strings.ToLower(dns.RcodeToString[r.Rcode]))
	}
	var out []netip.Addr
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// hostNetChanged tells the other machines the new exposed ports (gossip
// metadata) after a change at runtime.
func (d *Daemon) hostNetChanged(hostnet.Settings) { d.announceMeta() }

// announceMeta tells the other machines this machine's gossip metadata
// again, after a change of what it says (exposed ports, containers).
func (d *Daemon) announceMeta() {
	if d.gossip == nil {
		return // not gossiping yet: the first metadata will say it
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
		defer cancel()
		// The metadata is read now, so of two quick changes both
		// broadcasts carry the latest.
		if err := d.gossip.SetMeta(ctx, d.encodeMeta()); err != nil && d.ctx.Err() == nil {
			d.log.Warn("announce gossip metadata", "err", err)
		}
	}()
}

// announcedExposed is what the gossip metadata says of the exposed ports:
// "22,53/udp,8080" (tcp unsaid), within budget bytes ("+N" for the rest),
// and only where they are forwarded (netstack and rootless modes).
func (d *Daemon) announcedExposed(budget int) string {
	if d.hostnet == nil || d.dev == nil || (d.dev.Mode() != tun.ModeNetstack && d.mode() != ModeRootless) {
		return ""
	}
	return encodeExposed(d.hostnet.Settings().Expose, budget)
}

func encodeExposed(ports []tun.ExposedPort, budget int) string {
	items := make([]string, len(ports))
	for i, p := range ports {
		items[i] = strconv.Itoa(int(p.Port))
		if p.Proto == "udp" {
			items[i] += "/udp"
		}
	}
	if all := strings.Join(items, ","); len(all) <= budget {
		return all
	}
	// The longest prefix that leaves room for ",+N" (N the rest).
	for k := len(items) - 1; k >= 0; k-- {
		text := strings.Join(append(items[:k:k], "+"+strconv.Itoa(len(items)-k)), ",")
		if len(text) <= budget {
			return text
		}
	}
	return ""
}

// decodeExposed reads encodeExposed's text back as "8080/tcp" words.
func decodeExposed(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, item := range strings.Split(s, ",") {
		if strings.HasPrefix(item, "+") {
			out = append(out, item+" more")
			continue
		}
		if !strings.Contains(item, "/") {
			item += "/tcp"
		}
		out = append(out, item)
	}
	return out
}

// HostNet implements api.HostNetBackend.
func (d *Daemon) HostNet(ctx context.Context) (api.HostNet, error) {
	return hostNetInfo(d.hostnet.Status()), nil
}

// UpdateHostNet implements api.HostNetBackend.
func (d *Daemon) UpdateHostNet(ctx context.Context, u api.HostNetUpdate) (api.HostNet, error) {
	var c hostnet.Change
	for _, list := range []struct {
		in  []string
		out *[]tun.ExposedPort
	}{{u.AddExpose, &c.AddExpose}, {u.RemoveExpose, &c.RemoveExpose}} {
		if len(list.in) > hostnet.MaxExposed {
			return api.HostNet{}, fmt.Errorf("%w: %d ports in one change, at most %d", api.ErrBadRequest, len(list.in), hostnet.MaxExposed)
		}
		for _, s := range list.in {
			p, err := tun.ParseExposedPort(s)
			if err != nil {
				return api.HostNet{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
			}
			*list.out = append(*list.out, p)
		}
	}
	var err error
	if u.SOCKS5 != nil {
		if c.SOCKS5, err = listenUpdate("socks5", *u.SOCKS5); err != nil {
			return api.HostNet{}, err
		}
	}
	if u.HTTPProxy != nil {
		if c.HTTPProxy, err = listenUpdate("http proxy", *u.HTTPProxy); err != nil {
			return api.HostNet{}, err
		}
	}
	if c.Empty() {
		return api.HostNet{}, fmt.Errorf("%w: nothing to change: give ports to expose or remove, or proxy addresses", api.ErrBadRequest)
	}
	if _, err := d.hostnet.Update(ctx, c); err != nil {
		return api.HostNet{}, err
	}
	return hostNetInfo(d.hostnet.Status()), nil
}

// listenUpdate reads a proxy address of an update: "" or off turns the
// proxy off.
func listenUpdate(what, s string) (*string, error) {
	if s == "" {
		return &s, nil
	}
	p, err := hostnet.ParseListenFlag(what, s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return p, nil
}

func hostNetInfo(st hostnet.Status) api.HostNet {
	out := api.HostNet{Mode: string(st.Mode), Forwarding: st.Forwarding, Exposed: []string{}}
	for _, p := range st.Expose {
		out.Exposed = append(out.Exposed, p.String())
	}
	proxy := func(ps hostnet.ProxyState) *api.ProxyStatus {
		if ps.Listen == "" {
			return nil
		}
		return &api.ProxyStatus{Listen: ps.Listen, Serving: ps.Serving, Error: ps.Error}
	}
	out.SOCKS5, out.HTTPProxy = proxy(st.SOCKS5), proxy(st.HTTPProxy)
	return out
}
