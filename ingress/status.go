package ingress

// RouteInfo is a route as `uncloud ingress ls` shows it.
type RouteInfo struct {
	Host      string
	Path      string
	HTTPS     bool
	Service   string
	Port      uint16
	Backends  []BackendInfo
	Conflicts []string
	Cert      *CertInfo // https routes with a concrete host
}

// BackendInfo is one container behind a route.
type BackendInfo struct {
	Container string
	Machine   string
	Address   string
	InFlight  int64
	Down      bool // put aside by passive health
	Failures  uint64
}

// Routes describes the current table.
func (in *Ingress) Routes() []RouteInfo {
	var out []RouteInfo
	now := nowNano()
	for _, r := range in.table.Load().routes {
		ri := RouteInfo{Host: r.Host, Path: r.PathPrefix, HTTPS: r.HTTPS, Service: r.Service, Port: r.Port,
			Conflicts: r.Conflicts}
		for _, b := range r.Backends {
			ri.Backends = append(ri.Backends, BackendInfo{Container: b.name, Machine: b.machineID, Address: b.addr,
				InFlight: b.inflight.Load(), Down: b.down(now), Failures: b.failures.Load()})
		}
		if r.HTTPS && r.Host[0] != '*' {
			ci := in.certs.info(r.Host)
			ri.Cert = &ci
		}
		out = append(out, ri)
	}
	return out
}

// ACMEDirectory is the directory URL certificates are ordered from.
func (in *Ingress) ACMEDirectory() string { return in.certs.directory() }
