package ingress

import (
	"cmp"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/uncloud-mesh/uncloud/record"
)

// Route is one published host (and path prefix) and the containers that
// serve it. A route is immutable once in a table, except for its
// balancing cursor; a state change builds a new table.
type Route struct {
	Host       string // lowercase; "*.example.com" matches one label
	PathPrefix string // "" or "/api" (no trailing slash)
	HTTPS      bool   // served on https, http redirects
	Service    string
	Port       uint16 // container port
	Backends   []*backend
	// Conflicts names services that publish the same host and path and
	// lost to this one (the lowest service name wins).
	Conflicts []string

	rr      atomic.Uint32
	handler *routeHandler
}

// table maps host names to routes. Routes of one host are sorted by
// path prefix length, longest first, so the first match wins.
type table struct {
	exact    map[string][]*Route
	wildcard map[string][]*Route // keyed by the parent: "example.com" for "*.example.com"
	routes   []*Route            // all, sorted by host and path
}

// view is what the routes are built from.
type view struct {
	self       string // this machine's ID
	services   map[string]*record.Service
	containers map[string]*record.Container // by key
	machines   map[string]*record.Machine
	revoked    map[string]bool // machine IDs in the revoked set
}

// Reachability says which machines this machine can reach now (gossip
// liveness). Changed is signalled whenever that may have changed.
type Reachability interface {
	Reachable(machineID string) bool
	Changed() <-chan struct{}
}

// usable reports whether a container can take requests: it serves (see
// record.Container.Serves: running, health check passed or none), has an
// address, and runs on a reachable machine.
func usable(c *record.Container, self string, reach Reachability) bool {
	if !c.Serves() || c.Address == "" {
		return false
	}
	return c.MachineID == self || reach == nil || reach.Reachable(c.MachineID)
}

// buildTable derives the routes from the view. pool keeps backend state
// (connection counts, passive health) across tables: a backend that stays
// keeps its counters.
func buildTable(v view, reach Reachability, pool *pool, log *slog.Logger) *table {
	type key struct{ host, path string }
	byKey := map[key]*Route{}
	names := make([]string, 0, len(v.services))
	for n := range v.services {
		names = append(names, n)
	}
	slices.Sort(names)
	// Containers by service, sorted by key so balancing order is stable.
	bySvc := map[string][]*record.Container{}
	ckeys := make([]string, 0, len(v.containers))
	for k := range v.containers {
		ckeys = append(ckeys, k)
	}
	slices.Sort(ckeys)
	for _, k := range ckeys {
		c := v.containers[k]
		if c.Service != "" {
			bySvc[c.Service] = append(bySvc[c.Service], c)
		}
	}
	live := map[string]bool{}
	for _, name := range names {
		svc := v.services[name]
		for _, p := range svc.Ports {
			spec, err := record.ParsePortSpec(p)
			if err != nil {
				log.Warn("ingress skips a published port", "service", name, "err", err)
				continue
			}
			if !spec.Ingress() {
				continue
			}
			k := key{spec.Host, spec.PathPrefix}
			if r := byKey[k]; r != nil {
				r.Conflicts = append(r.Conflicts, name)
				log.Warn("two services publish one host and path; the first by name serves it",
					"host", spec.Host, "path", spec.PathPrefix, "serving", r.Service, "ignored", name)
				continue
			}
			r := &Route{Host: spec.Host, PathPrefix: spec.PathPrefix, HTTPS: spec.Protocol == "https",
				Service: name, Port: spec.Port}
			for _, c := range bySvc[name] {
				if !usable(c, v.self, reach) {
					continue
				}
				b := pool.get(c, spec.Port)
				live[b.addr] = true
				r.Backends = append(r.Backends, b)
			}
			byKey[k] = r
		}
	}
	pool.keep(live)
	t := &table{exact: map[string][]*Route{}, wildcard: map[string][]*Route{}}
	for _, r := range byKey {
		t.routes = append(t.routes, r)
		if parent, ok := strings.CutPrefix(r.Host, "*."); ok {
			t.wildcard[parent] = append(t.wildcard[parent], r)
		} else {
			t.exact[r.Host] = append(t.exact[r.Host], r)
		}
	}
	longestFirst := func(a, b *Route) int { return cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)) }
	for _, rs := range t.exact {
		slices.SortFunc(rs, longestFirst)
	}
	for _, rs := range t.wildcard {
		slices.SortFunc(rs, longestFirst)
	}
	slices.SortFunc(t.routes, func(a, b *Route) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.PathPrefix, b.PathPrefix))
	})
	return t
}

// lookup finds the route for a request's Host header and path. host may
// carry a port and any case; it does not allocate for the usual
// lowercase host.
func (t *table) lookup(host, path string) *Route {
	host = hostOnly(host)
	if hasUpper(host) {
		host = strings.ToLower(host)
	}
	host = strings.TrimSuffix(host, ".")
	if r := matchPath(t.exact[host], path); r != nil {
		return r
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		return matchPath(t.wildcard[host[i+1:]], path)
	}
	return nil
}

func matchPath(rs []*Route, path string) *Route {
	for _, r := range rs {
		if r.PathPrefix == "" {
			return r
		}
		if rest, ok := strings.CutPrefix(path, r.PathPrefix); ok && (rest == "" || rest[0] == '/') {
			return r
		}
	}
	return nil
}

// hostOnly strips a port from a Host header ("a.b:8080", "[::1]:80").
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// managedNames are the concrete host names of https routes: those get a
// certificate of their own. Wildcard hosts are served on demand.
func (t *table) managedNames() []string {
	var out []string
	for _, r := range t.routes {
		if r.HTTPS && !strings.HasPrefix(r.Host, "*.") && !slices.Contains(out, r.Host) {
			out = append(out, r.Host)
		}
	}
	return out
}

// servesName reports whether some route covers name (for on-demand TLS).
func (t *table) servesName(name string) bool {
	name = strings.ToLower(name)
	if len(t.exact[name]) > 0 {
		return true
	}
	i := strings.IndexByte(name, '.')
	return i > 0 && len(t.wildcard[name[i+1:]]) > 0
}

// ordersFor reports whether a certificate may be ordered for name, so
// whether an ACME challenge for it is one to answer or pass on: a
// concrete https route's host, or, with on-demand TLS, a name under a
// wildcard https route.
func (t *table) ordersFor(name string, onDemand bool) bool {
	name = strings.ToLower(name)
	if slices.ContainsFunc(t.exact[name], func(r *Route) bool { return r.HTTPS }) {
		return true
	}
	i := strings.IndexByte(name, '.')
	return onDemand && i > 0 && slices.ContainsFunc(t.wildcard[name[i+1:]], func(r *Route) bool { return r.HTTPS })
}
