package record

import (
	"fmt"
	"strconv"
	"strings"
)

// PortSpec is a port a service publishes, as written in Service.Ports and
// on the command line (`uncloud run -p`, compose `ports:`):
//
//	[HOST[/PATH]:]PORT[/PROTOCOL]
//
// PROTOCOL is tcp (the default), udp, http or https. A HOST (and an
// optional PATH prefix) is given only with http or https: the ingress
// serves that host name and forwards to PORT on the service's containers.
// Examples: "8080", "53/udp", "app.example.com:8080/https",
// "example.com/api:9000/http". The record keeps the text; readers parse
// it with ParsePortSpec so that the runtime, the resolver and the ingress
// agree on one meaning.
type PortSpec struct {
	Host       string // lowercase host name, ingress only
	PathPrefix string // "/api", ingress only; empty means every path
	Port       uint16 // the container port
	Protocol   string // tcp, udp, http or https
}

// Ingress reports whether the ingress serves this port.
func (p PortSpec) Ingress() bool { return p.Protocol == "http" || p.Protocol == "https" }

// String is the canonical text of the spec; ParsePortSpec(p.String()) == p.
func (p PortSpec) String() string {
	var b strings.Builder
	if p.Host != "" {
		b.WriteString(p.Host)
		b.WriteString(p.PathPrefix)
		b.WriteByte(':')
	}
	b.WriteString(strconv.Itoa(int(p.Port)))
	if p.Protocol != "tcp" {
		b.WriteByte('/')
		b.WriteString(p.Protocol)
	}
	return b.String()
}

// ParsePortSpec parses a published port; errors say what is wrong with
// which part.
func ParsePortSpec(s string) (PortSpec, error) {
	p := PortSpec{Protocol: "tcp"}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return p, fmt.Errorf("port %q: empty", s)
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 && !strings.Contains(rest[i:], ":") {
		p.Protocol = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		switch p.Protocol {
		case "tcp", "udp", "http", "https":
		default:
			return p, fmt.Errorf("port %q: unknown protocol %q (use tcp, udp, http or https)", s, p.Protocol)
		}
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		host := strings.ToLower(rest[:i])
		rest = rest[i+1:]
		if j := strings.IndexByte(host, '/'); j >= 0 {
			host, p.PathPrefix = host[:j], host[j:]
		}
		if err := checkHostName(host); err != nil {
			return p, fmt.Errorf("port %q: %w", s, err)
		}
		if strings.ContainsAny(p.PathPrefix, " ?#") || strings.Contains(p.PathPrefix, "//") {
			return p, fmt.Errorf("port %q: path prefix %q must be a plain path like /api", s, p.PathPrefix)
		}
		p.PathPrefix = strings.TrimSuffix(p.PathPrefix, "/")
		p.Host = host
		if !p.Ingress() {
			return p, fmt.Errorf("port %q: a host name is served by the ingress: add /http or /https", s)
		}
	}
	n, err := strconv.ParseUint(rest, 10, 16)
	if err != nil || n == 0 {
		return p, fmt.Errorf("port %q: %q is not a port number (1-65535)", s, rest)
	}
	p.Port = uint16(n)
	if p.Ingress() && p.Host == "" {
		return p, fmt.Errorf("port %q: %s needs a host name, e.g. app.example.com:%d/%s", s, p.Protocol, n, p.Protocol)
	}
	return p, nil
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
