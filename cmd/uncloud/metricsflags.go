package main

import (
	"net/netip"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/agent/metrics"
)

// metricsFlags turn on the agent's Prometheus /metrics. They are on
// agent, init and join (which start the agent) and install (which writes
// them into the unit), and reach a background agent as its flags.
type metricsFlags struct {
	MetricsAddr   string `name:"metrics-addr" help:"Serve Prometheus metrics at http://ADDR/metrics (README, Metrics). Off unless given. ADDR is IP:PORT on loopback (127.0.0.1:9101) or this machine's mesh address; mesh:PORT means the mesh address, whichever subnet this machine gets (mesh:9101). Other addresses are refused unless --metrics-public is given." placeholder:"ADDR"`
	MetricsPublic bool   `name:"metrics-public" help:"Allow --metrics-addr on a non-loopback, non-mesh address, e.g. a LAN address or :9101 (all interfaces). Metrics have no authentication: whoever reaches the address reads them."`
}

// check refuses a bad address before anything is changed; the agent
// checks again once it knows its mesh address.
func (m metricsFlags) check() error {
	if m.MetricsAddr == "" {
		return nil
	}
	_, err := metrics.ParseAddr(m.MetricsAddr, netip.Addr{}, m.MetricsPublic)
	return err
}

func (m metricsFlags) apply(o *agent.DaemonOptions) {
	o.MetricsAddr, o.MetricsPublic = m.MetricsAddr, m.MetricsPublic
}

// args are the flags for a background `uncloud agent` or the unit.
func (m metricsFlags) args() []string {
	var out []string
	if m.MetricsAddr != "" {
		out = append(out, "--metrics-addr", m.MetricsAddr)
	}
	if m.MetricsPublic {
		out = append(out, "--metrics-public")
	}
	return out
}
