package record

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PortSpec is a port a service declares, as written in Service.Ports and
// on the command line (`uncloud run -p`, compose `ports:` and `expose:`).
// Three forms, told apart by what stands before the container port:
//
//	PORT[-END][/tcp|udp]                              container ports: SRV records only
//	[IP:]HOST_PORT[-END]:PORT[-END][/tcp|udp]         Docker's: publish host ports
//	IP::PORT[/tcp|udp]                                Docker's: Docker picks the host port
//	HOST[/PATH]:PORT/http|https                       uncloud's ingress: served at HOST
//
// A host name (letters) before the port means the ingress; digits mean a
// host port, published by Docker on every machine that runs a replica.
// An IPv6 address goes in brackets: "[::1]:8080:80". The record keeps
// the text; readers parse it with ParsePortSpec so that the runtime, the
// placement, the resolver and the ingress agree on one meaning.
type PortSpec struct {
	Host       string // lowercase host name, ingress only
	PathPrefix string // "/api", ingress only; empty means every path
	// Publish says Docker publishes host ports (Docker's forms).
	Publish bool
	// HostIP is the host address the published ports bind ("" means all).
	HostIP string
	// HostPort is the first published host port; 0 with Publish: Docker
	// picks one.
	HostPort uint16
	Port     uint16 // the container port (the first of a range)
	// PortEnd is the last container port of a range; 0 for a single port.
	PortEnd  uint16
	Protocol string // tcp, udp, http or https
}

// maxRange bounds a port range: each port becomes a binding and an SRV
// record on every replica.
const maxRange = 1024

// Ingress reports whether the ingress serves this port.
func (p PortSpec) Ingress() bool { return p.Protocol == "http" || p.Protocol == "https" }

// Count is the number of container ports the spec names.
func (p PortSpec) Count() int {
	if p.PortEnd == 0 {
		return 1
	}
	return int(p.PortEnd-p.Port) + 1
}

// Binding is one host port a published spec binds on a machine.
type Binding struct {
	HostIP   string // "" means every address
	HostPort uint16 // 0: Docker picks
	Port     uint16 // container port
	Protocol string // tcp or udp
}

// String is how a binding is named to people: "127.0.0.1:8080/tcp".
func (b Binding) String() string {
	ip := b.HostIP
	if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	if ip != "" {
		ip += ":"
	}
	return ip + strconv.Itoa(int(b.HostPort)) + "/" + b.Protocol
}

// Collides says whether two bindings cannot both exist on one machine:
// same protocol and host port, and addresses that overlap (all
// addresses overlap every one). A port Docker picks collides with nothing.
func (b Binding) Collides(o Binding) bool {
	if b.HostPort == 0 || o.HostPort == 0 || b.HostPort != o.HostPort || b.Protocol != o.Protocol {
		return false
	}
	return b.HostIP == "" || o.HostIP == "" || b.HostIP == o.HostIP
}

// Bindings are the host ports a published spec binds, one per container
// port; nil for the other forms.
func (p PortSpec) Bindings() []Binding {
	if !p.Publish {
		return nil
	}
	out := make([]Binding, 0, p.Count())
	for i := range p.Count() {
		b := Binding{HostIP: p.HostIP, Port: p.Port + uint16(i), Protocol: p.Protocol}
		if p.HostPort != 0 {
			b.HostPort = p.HostPort + uint16(i)
		}
		out = append(out, b)
	}
	return out
}

// ContainerPorts are the container ports the spec names, in order.
func (p PortSpec) ContainerPorts() []uint16 {
	out := make([]uint16, 0, p.Count())
	for i := range p.Count() {
		out = append(out, p.Port+uint16(i))
	}
	return out
}

// String is the canonical text of the spec; ParsePortSpec(p.String()) == p.
func (p PortSpec) String() string {
	var b strings.Builder
	switch {
	case p.Host != "":
		b.WriteString(p.Host)
		b.WriteString(p.PathPrefix)
		b.WriteByte(':')
	case p.Publish:
		if p.HostIP != "" {
			if strings.Contains(p.HostIP, ":") {
				b.WriteString("[" + p.HostIP + "]")
			} else {
				b.WriteString(p.HostIP)
			}
			b.WriteByte(':')
		}
		if p.HostPort != 0 {
			b.WriteString(portRange(p.HostPort, p.PortEnd, p.Port))
		}
		b.WriteByte(':')
	}
	b.WriteString(portRange(p.Port, p.PortEnd, p.Port))
	if p.Protocol != "tcp" {
		b.WriteByte('/')
		b.WriteString(p.Protocol)
	}
	return b.String()
}

// portRange writes first, or first-last for a range as long as
// [base, end].
func portRange(first, end, base uint16) string {
	s := strconv.Itoa(int(first))
	if end != 0 {
		s += "-" + strconv.Itoa(int(first+(end-base)))
	}
	return s
}

// ParsePortSpec parses a port spec; errors say what is wrong with which
// part.
func ParsePortSpec(s string) (PortSpec, error) {
	p := PortSpec{Protocol: "tcp"}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return p, fmt.Errorf("port %q: empty", s)
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 && !strings.ContainsAny(rest[i:], ":]") {
		p.Protocol = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		switch p.Protocol {
		case "tcp", "udp", "http", "https":
		default:
			return p, fmt.Errorf("port %q: unknown protocol %q (use tcp, udp, http or https)", s, p.Protocol)
		}
	}
	var parts []string
	if strings.HasPrefix(rest, "[") {
		// [IPv6]:HOST_PORT:PORT
		end := strings.IndexByte(rest, ']')
		if end < 0 || !strings.HasPrefix(rest[end+1:], ":") {
			return p, fmt.Errorf("port %q: an IPv6 address is written [ADDRESS]:HOST_PORT:PORT", s)
		}
		parts = append([]string{rest[1:end]}, strings.Split(rest[end+2:], ":")...)
		if len(parts) != 3 {
			return p, fmt.Errorf("port %q: an IPv6 address is written [ADDRESS]:HOST_PORT:PORT", s)
		}
	} else {
		parts = strings.Split(rest, ":")
	}
	var err error
	switch len(parts) {
	case 1:
		err = p.parseContainer(s, parts[0])
	case 2:
		if parts[0] == "" || isPortText(parts[0]) {
			err = p.parsePublished(s, "", parts[0], parts[1])
		} else if _, ipErr := netip.ParseAddr(parts[0]); ipErr == nil {
			return p, fmt.Errorf("port %q: an address alone is not a host port: write %s:HOST_PORT:PORT (Docker's form)", s, parts[0])
		} else {
			err = p.parseIngress(s, parts[0], parts[1])
		}
	case 3:
		err = p.parsePublished(s, parts[0], parts[1], parts[2])
	default:
		return p, fmt.Errorf("port %q: too many ':' (an IPv6 address goes in brackets: [::1]:8080:80)", s)
	}
	return p, err
}

// isPortText says whether t is made of digits and '-': a port or range,
// never a host name (which has letters).
func isPortText(t string) bool {
	if t == "" {
		return false
	}
	for _, c := range t {
		if !(c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parseRange parses PORT or FIRST-LAST.
func parseRange(s, what, t string) (first, last uint16, err error) {
	a, b, isRange := strings.Cut(t, "-")
	n, err1 := strconv.ParseUint(a, 10, 16)
	if err1 != nil || n == 0 {
		return 0, 0, fmt.Errorf("port %q: %s %q is not a port number (1-65535)", s, what, a)
	}
	if !isRange {
		return uint16(n), 0, nil
	}
	m, err2 := strconv.ParseUint(b, 10, 16)
	if err2 != nil || m == 0 {
		return 0, 0, fmt.Errorf("port %q: %s %q is not a port number (1-65535)", s, what, b)
	}
	if m <= n {
		return 0, 0, fmt.Errorf("port %q: %s range %q must go up", s, what, t)
	}
	if m-n+1 > maxRange {
		return 0, 0, fmt.Errorf("port %q: %s range %q has more than %d ports", s, what, t, maxRange)
	}
	return uint16(n), uint16(m), nil
}

// parseContainer is the bare form: container ports for SRV records.
func (p *PortSpec) parseContainer(s, t string) error {
	first, last, err := parseRange(s, "port", t)
	if err != nil {
		return err
	}
	p.Port, p.PortEnd = first, last
	if p.Ingress() {
		return fmt.Errorf("port %q: %s needs a host name, e.g. app.example.com:%d/%s", s, p.Protocol, first, p.Protocol)
	}
	return nil
}

// parsePublished is Docker's form: [IP:]HOST_PORT:PORT, ranges of one
// length on both sides.
func (p *PortSpec) parsePublished(s, ip, hostPort, port string) error {
	p.Publish = true
	if p.Ingress() {
		return fmt.Errorf("port %q: a published host port is tcp or udp; the ingress form is HOST[/PATH]:PORT/%s with a host name", s, p.Protocol)
	}
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("port %q: %q is not an IP address to bind", s, ip)
		}
		if a.Is4In6() {
			a = a.Unmap()
		}
		if !a.IsUnspecified() {
			p.HostIP = a.String()
		}
	} else if hostPort == "" {
		return fmt.Errorf("port %q: no host port: write HOST_PORT:PORT, or IP::PORT to let Docker pick one", s)
	}
	first, last, err := parseRange(s, "port", port)
	if err != nil {
		return err
	}
	p.Port, p.PortEnd = first, last
	if hostPort == "" {
		return nil // Docker picks
	}
	hFirst, hLast, err := parseRange(s, "host port", hostPort)
	if err != nil {
		return err
	}
	if (hLast == 0) != (last == 0) || (last != 0 && hLast-hFirst != last-first) {
		return fmt.Errorf("port %q: host ports %q and container ports %q must be ranges of one length", s, hostPort, port)
	}
	p.HostPort = hFirst
	return nil
}

// parseIngress is uncloud's form: HOST[/PATH]:PORT/http|https.
func (p *PortSpec) parseIngress(s, host, port string) error {
	host = strings.ToLower(host)
	if j := strings.IndexByte(host, '/'); j >= 0 {
		host, p.PathPrefix = host[:j], host[j:]
	}
	if err := checkHostName(host); err != nil {
		return fmt.Errorf("port %q: %w", s, err)
	}
	if strings.ContainsAny(p.PathPrefix, " ?#") || strings.Contains(p.PathPrefix, "//") {
		return fmt.Errorf("port %q: path prefix %q must be a plain path like /api", s, p.PathPrefix)
	}
	p.PathPrefix = strings.TrimSuffix(p.PathPrefix, "/")
	p.Host = host
	if !p.Ingress() {
		return fmt.Errorf("port %q: a host name is served by the ingress: add /http or /https", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("port %q: %q is not a port number (1-65535)", s, port)
	}
	p.Port = uint16(n)
	return nil
}

// checkHostName accepts DNS names made of RFC 1123 labels, lowercase,
// with an optional leading wildcard label.
func checkHostName(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("host name %q: must be 1-253 characters", h)
	}
	for i, label := range strings.Split(h, ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host name %q: label %q is not a DNS label", h, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host name %q: %q is not allowed in a DNS label", h, c)
			}
		}
	}
	return nil
}
