package nat

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Filter says which interface addresses are never candidates. The zero
// value is replaced by DefaultFilter.
type Filter struct {
	// ExcludePrefixes are address ranges that are never underlay
	// endpoints: the mesh itself, by default.
	ExcludePrefixes []netip.Prefix
	// ExcludeInterfaces are interface name prefixes whose addresses are
	// local to the machine: Docker's bridges, veths, the mesh interface.
	ExcludeInterfaces []string
}

// DefaultFilter leaves out the mesh and the interfaces of
// Docker and of uncloud itself.
func DefaultFilter() Filter {
	return Filter{
		ExcludePrefixes:   []netip.Prefix{meshaddr.Mesh()},
		ExcludeInterfaces: []string{"docker", "br-", "veth", "uncloud"},
	}
}

// ParseFilter builds a filter from text: each item is a prefix
// ("172.17.0.0/16") or an interface name prefix ("wlan"). The defaults
// are kept; the items are added to them.
func ParseFilter(items []string) (Filter, error) {
	f := DefaultFilter()
	for _, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		if strings.Contains(it, "/") {
			p, err := netip.ParsePrefix(it)
			if err != nil {
				return Filter{}, fmt.Errorf("endpoint filter %q: not a prefix: %w", it, err)
			}
			f.ExcludePrefixes = append(f.ExcludePrefixes, p.Masked())
			continue
		}
		if strings.ContainsAny(it, " \t:") || len(it) > 15 {
			return Filter{}, fmt.Errorf("endpoint filter %q: neither a prefix nor an interface name", it)
		}
		f.ExcludeInterfaces = append(f.ExcludeInterfaces, it)
	}
	return f, nil
}

// Interface is one network interface as candidate gathering sees it.
type Interface struct {
	Name     string
	Up       bool
	Loopback bool
	Addrs    []netip.Addr
}

// HostInterfaces lists the host's interfaces (in the agent's network
// namespace).
func HostInterfaces() ([]Interface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifaces))
	for _, ifc := range ifaces {
		it := Interface{Name: ifc.Name, Up: ifc.Flags&net.FlagUp != 0, Loopback: ifc.Flags&net.FlagLoopback != 0}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipnet, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipnet.IP); ok {
					it.Addrs = append(it.Addrs, ip.Unmap())
				}
			}
		}
		out = append(out, it)
	}
	return out, nil
}

// InterfaceCandidates are the addresses of usable interfaces at port:
// up, not loopback, not link-local or multicast, not filtered. IPv4 first.
func InterfaceCandidates(ifaces []Interface, f Filter, port uint16) []netip.AddrPort {
	var v4, v6 []netip.AddrPort
	for _, ifc := range ifaces {
		if !ifc.Up || ifc.Loopback || f.excludesInterface(ifc.Name) {
			continue
		}
		for _, a := range ifc.Addrs {
			if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() || f.excludesAddr(a) {
				continue
			}
			ap := netip.AddrPortFrom(a, port)
			if a.Is4() {
				v4 = append(v4, ap)
			} else {
				v6 = append(v6, ap)
			}
		}
	}
	return append(v4, v6...)
}

func (f Filter) excludesInterface(name string) bool {
	for _, p := range f.ExcludeInterfaces {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (f Filter) excludesAddr(a netip.Addr) bool {
	for _, p := range f.ExcludePrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Candidates merges the sources of candidate endpoints in order of
// preference: a configured public endpoint (an address with a port
// forward), interface addresses, then addresses seen from outside
// (reflexive). Duplicates and filtered addresses are dropped.
func Candidates(public []netip.AddrPort, iface []netip.AddrPort, reflexive []netip.AddrPort, f Filter) []netip.AddrPort {
	var out []netip.AddrPort
	for _, list := range [][]netip.AddrPort{public, iface, reflexive} {
		for _, ap := range list {
			if !ap.IsValid() || ap.Port() == 0 || f.excludesAddr(ap.Addr()) || slices.Contains(out, ap) {
				continue
			}
			out = append(out, ap)
		}
	}
	return out
}

// maxPeerCandidates bounds the candidates taken from one peer's record,
// and again from its call-me-maybe: a machine has a few addresses, and
// every candidate costs a probe twice a second while searching.
const maxPeerCandidates = 16

// maxCandidatesAttr bounds how much of a call-me-maybe's candidate list is
// read: maxPeerCandidates of the longest form.
const maxCandidatesAttr = maxPeerCandidates * len("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535,")

var (
	ipv4Broadcast   = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	ipv4ThisNetwork = netip.MustParsePrefix("0.0.0.0/8")
)

// usableCandidate reports whether an address can be another machine's
// underlay endpoint at all, whoever names it: not loopback (that would be
// this machine), not unspecified, multicast or broadcast, not link-local
// (an IPv6 link-local address needs a zone, which no candidate carries,
// and an IPv4 one is a machine that found no DHCP server; neither is
// reachable across the networks a mesh spans), and not inside the mesh
// (a candidate there would send WireGuard into its own tunnel).
func usableCandidate(ap netip.AddrPort) bool {
	a := ap.Addr()
	return ap.IsValid() && ap.Port() != 0 && a.Zone() == "" && !a.Is4In6() &&
		!a.IsLoopback() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLinkLocalUnicast() &&
		a != ipv4Broadcast && !ipv4ThisNetwork.Contains(a) && !meshaddr.Mesh().Contains(a)
}

// usableCandidates keeps the usable addresses of list (IPv4-mapped ones
// as IPv4), at most max, in order and without duplicates.
func usableCandidates(list []netip.AddrPort, max int) []netip.AddrPort {
	var out []netip.AddrPort
	for _, ap := range list {
		if len(out) == max {
			break
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if usableCandidate(ap) && !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	return out
}

// plausibleCandidates keeps, of the candidates a call-me-maybe names, the
// usable ones at an address the sender is known to have, and returns how
// many it dropped.
//
// The rule: an address (any port) of the sender's own record, where its
// authenticated probes came from, or where WireGuard reaches it now. A
// call-me-maybe exists to carry fresh NAT mappings, and a fresh mapping is
// a new port on an address already known this way (a NAT that reboots
// keeps its public address; the record carries the interface addresses
// and, unless the NAT is symmetric, the reflexive ones). Anything else
// would make this machine probe a third party (or itself) on the word of
// one member: the record is at least the sender's public, signed claim,
// seen by every machine. What this costs: a machine whose public address
// changed is probed at its new address once its record says so (within
// the publish interval) or once its probes arrive from there; a symmetric
// NAT's mappings (per destination, useless to anyone else) are not probed
// from here.
func (m *Manager) plausibleCandidates(p *peer, cands []netip.AddrPort) ([]netip.AddrPort, int) {
	known := map[netip.Addr]bool{}
	for _, ap := range p.recordCands {
		known[ap.Addr()] = true
	}
	for _, ap := range p.seenFrom {
		known[ap.Addr()] = true
	}
	if li := p.liveInfo(); !li.relayed && li.endpoint.IsValid() {
		known[li.endpoint.Addr()] = true
	}
	var out []netip.AddrPort
	dropped := 0
	for _, c := range cands {
		if len(out) == maxPeerCandidates || !usableCandidate(c) || !known[c.Addr()] || slices.Contains(out, c) {
			dropped++
			continue
		}
		out = append(out, c)
	}
	return out, dropped
}
