package agent

import (
	"context"
	"fmt"
	"net"

	"github.com/uncloud-mesh/uncloud/agent/metrics"
	"github.com/uncloud-mesh/uncloud/ingress"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// startMetrics serves /metrics when DaemonOptions.MetricsAddr asks for
// it: on the host's stack for loopback (and, with MetricsPublic, other
// host addresses), through the device for the mesh address (which, in
// netstack mode, exists only inside the agent). It runs before the
// ingress starts, so the ingress's metrics exist when it does. An
// address the rule refuses stops the agent; one it cannot listen on is
// logged.
func (d *Daemon) startMetrics(ctx context.Context) error {
	if d.opts.MetricsAddr == "" {
		return nil
	}
	ap, err := metrics.ParseAddr(d.opts.MetricsAddr, d.state.MeshAddress(), d.opts.MetricsPublic)
	if err != nil {
		return err
	}
	if metrics.OnMesh(ap) && ap.Addr() != d.state.MeshAddress() {
		return fmt.Errorf("metrics address %s: this machine's mesh address is %s", ap, d.state.MeshAddress())
	}
	reg, err := metrics.NewRegistry(ctx, d.metricSources(), d.log.With("component", "metrics"))
	if err != nil {
		return err
	}
	if d.ingressMetrics, err = ingress.NewMetrics(reg); err != nil {
		return err
	}
	var ln net.Listener
	if metrics.OnMesh(ap) {
		ln, err = d.dev.Listen(ctx, "tcp", ap.String())
	} else {
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, "tcp", ap.String())
	}
	if err != nil {
		// As with DNS: the mesh matters more than its metrics, so a port
		// already taken is logged, not a reason to stay down.
		d.log.Error("metrics: not served", "addr", ap.String(), "err", err)
		return nil
	}
	d.goServe("metrics", func() error { return metrics.Serve(ctx, ln, reg, d.log) })
	d.life.stopAccepting(func() error { return ignoreClosed(ln.Close()) })
	d.log.Info("metrics", "addr", "http://"+ap.String()+"/metrics")
	return nil
}

// metricSources are the reads behind each scrape; see package metrics.
func (d *Daemon) metricSources() metrics.Sources {
	return metrics.Sources{
		Peers: d.metricPeers,
		Members: func() map[string]int {
			out := map[string]int{}
			for st, n := range d.gossip.MemberCounts() {
				out[st.String()] += n
			}
			return out
		},
		State: func(ctx context.Context) (metrics.State, error) {
			c, err := d.store.Counts(ctx)
			if err != nil {
				return metrics.State{}, err
			}
			s := d.store.Stats()
			return metrics.State{Keys: c.Keys, Blocks: c.Blocks, Heads: c.Heads,
				BlocksFetched: s.BlocksFetched, BlocksRejected: s.BlocksRejected, Unverified: s.Unverified}, nil
		},
		DNS: func() (metrics.DNS, bool) {
			svc := d.dns.Load()
			if svc == nil {
				return metrics.DNS{}, false
			}
			st := svc.srv.Stats()
			return metrics.DNS{Queries: st.Queries.Load(), Answered: st.Answered.Load(), Forwarded: st.Forwarded.Load(),
				CacheHits: st.CacheHits.Load(), ServFail: st.ServFail.Load(), Dropped: st.Dropped.Load(),
				Denied: st.Denied.Load(), TCPRefused: st.TCPRefused.Load()}, true
		},
		Containers: func(ctx context.Context) (map[string]int, error) {
			recs, err := d.store.List(ctx, record.ContainersPrefix+d.state.MachineID+"/")
			if err != nil {
				return nil, err
			}
			out := map[string]int{}
			for _, r := range recs {
				if c, ok := r.(*record.Container); ok {
					out[c.State]++
				}
			}
			return out, nil
		},
	}
}

// metricPeers are the machines among WireGuard's peers (temporary join
// peers are left out: they are not machines yet), named by their
// records, with the NAT layer's path and RTT.
func (d *Daemon) metricPeers(ctx context.Context) ([]metrics.Peer, error) {
	peers, err := d.dev.Peers()
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	recs, err := d.machines(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range recs {
		names[m.WireGuardKey] = m.Name
	}
	paths := map[tun.Key]metrics.Peer{}
	if d.nat != nil {
		for _, p := range d.nat.mgr.Status().Peers {
			paths[p.Key] = metrics.Peer{Path: string(p.Path), Via: p.Via, RTT: p.RTT}
		}
	}
	var out []metrics.Peer
	for _, p := range peers {
		name := names[p.PublicKey.String()]
		if name == "" {
			continue
		}
		mp := paths[p.PublicKey]
		mp.Name, mp.RxBytes, mp.TxBytes, mp.LastHandshake = name, p.RxBytes, p.TxBytes, p.LastHandshake
		out = append(out, mp)
	}
	return out, nil
}
