package main

// Ports in Compose files. Two forms share the `ports` key:
//
//   - Docker's ("80", "8080:80", "127.0.0.1:8080:80/udp", "8000-8002:80-82",
//     the long syntax): compose-go parses them, and each reaches the agent
//     as Docker's short text, one per mapping;
//   - uncloud's ingress form, HOST[/PATH]:PORT/http|https: told apart by its
//     host name (Docker's forms have an IP address there or nothing), kept
//     as written. It may also go in the service's `x-ports` list, which
//     `docker compose` ignores, so one file runs under both.

import (
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"strings"

	interp "github.com/compose-spec/compose-go/v2/interpolation"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/record"
)

// ingressPortExt marks, inside a long-syntax port, an ingress port that
// was written in the short form (see castIngressPorts).
const ingressPortExt = "x-uncloud-ingress"

// composeIngressKey is the service extension that holds ingress ports only.
const composeIngressKey = "x-ports"

// isIngressPort reports whether a port text is uncloud's ingress form:
// its protocol is http or https, or its host part is a name rather than an
// IP address (Docker's forms allow only an address there).
func isIngressPort(s string) bool {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '/'); i >= 0 && !strings.Contains(s[i:], ":") {
		switch strings.ToLower(s[i+1:]) {
		case "http", "https":
			return true
		}
	}
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") > 2 {
		return false // IPv6, always Docker's
	}
	host, _, ok := strings.Cut(s, ":")
	if !ok {
		return false
	}
	host, _, _ = strings.Cut(host, "/")
	if _, err := netip.ParseAddr(host); err == nil {
		return false
	}
	return strings.ContainsFunc(host, func(c rune) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' })
}

// castIngressPorts is a loader option. compose-go parses every short
// port with Docker's grammar, which refuses a host name, and it does so
// after each file is interpolated. So, as each string under
// services.*.ports is interpolated, an ingress port is turned into a long
// port that carries its text in an extension: it is merged across files
// and de-duplicated like any other port, and read back by servicePorts.
func castIngressPorts(o *loader.Options) {
	if o.Interpolate == nil {
		return
	}
	casts := maps.Clone(o.Interpolate.TypeCastMapping) // compose-go's own table: never write to it
	if casts == nil {
		casts = map[tree.Path]interp.Cast{}
	}
	casts[tree.NewPath("services", tree.PathMatchAll, "ports", tree.PathMatchList)] = func(v string) (any, error) {
		if !isIngressPort(v) {
			if _, err := types.ParsePortConfig(v); err != nil {
				return nil, fmt.Errorf("port %q: %w", v, err) // compose-go's own error names neither
			}
			return v, nil
		}
		spec, err := record.ParsePortSpec(v)
		if err != nil {
			return nil, err
		}
		return map[string]any{
			"target":       int(spec.Port),
			"host_ip":      spec.Host + spec.PathPrefix, // only so that two ingress ports never look alike
			"protocol":     spec.Protocol,
			ingressPortExt: v,
		}, nil
	}
	o.Interpolate.TypeCastMapping = casts
}

// servicePorts is what the agent gets in RunRequest.Ports: ingress ports
// as written, Docker's as their short text.
func servicePorts(s types.ServiceConfig) ([]string, error) {
	var out []string
	for _, p := range s.Ports {
		if v, ok := p.Extensions[ingressPortExt].(string); ok {
			out = append(out, v)
			continue
		}
		out = append(out, dockerPortText(p))
	}
	extra, err := extensionStrings(s.Extensions[composeIngressKey])
	if err != nil {
		return nil, fmt.Errorf("services.%s.%s: %w", s.Name, composeIngressKey, err)
	}
	for _, v := range extra {
		if !isIngressPort(v) {
			return nil, fmt.Errorf("services.%s.%s: %q is not an ingress port: %s holds HOST[/PATH]:PORT/http|https; Docker's forms go in ports", s.Name, composeIngressKey, v, composeIngressKey)
		}
		if _, err := record.ParsePortSpec(v); err != nil {
			return nil, fmt.Errorf("services.%s.%s: %w", s.Name, composeIngressKey, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// dockerPortText writes a parsed port back in Docker's short syntax:
// [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]. compose-go has already split a
// range of pairs into one port per pair; a published range for one
// target ("8000-8009:80") stays a range.
func dockerPortText(p types.ServicePortConfig) string {
	s := strconv.FormatUint(uint64(p.Target), 10)
	if p.HostIP != "" {
		ip := p.HostIP
		if strings.Contains(ip, ":") {
			ip = "[" + ip + "]"
		}
		s = ip + ":" + p.Published + ":" + s
	} else if p.Published != "" {
		s = p.Published + ":" + s
	}
	if p.Protocol != "" && p.Protocol != "tcp" {
		s += "/" + p.Protocol
	}
	return s
}

// extensionStrings reads an x- key that holds names: a list, or one
// comma-separated string.
func extensionStrings(v any) ([]string, error) {
	var out []string
	switch v := v.(type) {
	case nil:
	case string:
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	case []any:
		for _, s := range v {
			switch s.(type) {
			case string, int, int64, float64:
				out = append(out, fmt.Sprint(s))
			default:
				return nil, fmt.Errorf("%v: want a string", s)
			}
		}
	default:
		return nil, fmt.Errorf("want a list of strings or one comma-separated string, not %T", v)
	}
	return out, nil
}
