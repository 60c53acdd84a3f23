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
