package metrics

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCollector feeds fixed sources to the collector and compares the
// exposition with what an operator's Prometheus should get.
func TestCollector(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		src     Sources
		metrics []string // names compared; the others are ignored
		want    string
	}{
		{
			name: "peers: direct, relayed via m3, no handshake yet, unknown to the NAT layer; duplicate name kept once",
			src: Sources{Peers: func(context.Context) ([]Peer, error) {
				return []Peer{
					{Name: "m3", RxBytes: 10, TxBytes: 20, Path: "direct", RTT: 1500 * time.Microsecond, LastHandshake: now.Add(-30 * time.Second)},
					{Name: "m2", RxBytes: 1 << 20, TxBytes: 5, Path: "relayed", Via: "m3", RTT: 40 * time.Millisecond, LastHandshake: now.Add(-90 * time.Second)},
					{Name: "m4", RxBytes: 0, TxBytes: 148, Path: "probing"},
					{Name: "m5"},
					{Name: "m3", RxBytes: 999},
				}, nil
			}},
			metrics: []string{"uncloud_peer_receive_bytes_total", "uncloud_peer_transmit_bytes_total", "uncloud_peer_path", "uncloud_peer_rtt_seconds", "uncloud_peers"},
			want: `
# HELP uncloud_peer_path 1 for the path the peer's traffic takes: direct, relayed (via names the relaying machine), probing or rotating.
# TYPE uncloud_peer_path gauge
uncloud_peer_path{path="direct",peer="m3",via=""} 1
uncloud_peer_path{path="probing",peer="m4",via=""} 1
uncloud_peer_path{path="relayed",peer="m2",via="m3"} 1
# HELP uncloud_peer_receive_bytes_total Bytes received from the peer through WireGuard since its peer entry was made.
# TYPE uncloud_peer_receive_bytes_total counter
uncloud_peer_receive_bytes_total{peer="m2"} 1.048576e+06
uncloud_peer_receive_bytes_total{peer="m3"} 10
uncloud_peer_receive_bytes_total{peer="m4"} 0
uncloud_peer_receive_bytes_total{peer="m5"} 0
# HELP uncloud_peer_rtt_seconds Round-trip time to the peer on its current path, as the NAT layer last measured it.
# TYPE uncloud_peer_rtt_seconds gauge
uncloud_peer_rtt_seconds{peer="m2"} 0.04
uncloud_peer_rtt_seconds{peer="m3"} 0.0015
# HELP uncloud_peer_transmit_bytes_total Bytes sent to the peer through WireGuard since its peer entry was made.
# TYPE uncloud_peer_transmit_bytes_total counter
uncloud_peer_transmit_bytes_total{peer="m2"} 5
uncloud_peer_transmit_bytes_total{peer="m3"} 20
uncloud_peer_transmit_bytes_total{peer="m4"} 148
uncloud_peer_transmit_bytes_total{peer="m5"} 0
# HELP uncloud_peers WireGuard peers configured on this machine.
# TYPE uncloud_peers gauge
uncloud_peers 5
`,
		},
		{
			name:    "peers that cannot be read leave the peer series out",
			src:     Sources{Peers: func(context.Context) ([]Peer, error) { return nil, errors.New("device closed") }},
			metrics: []string{"uncloud_peers", "uncloud_peer_receive_bytes_total"},
			want:    ``,
		},
		{
			name: "gossip members: every state, zeros included",
			src:  Sources{Members: func() map[string]int { return map[string]int{"alive": 2, "suspect": 1} }},
			want: `
# HELP uncloud_gossip_members Gossip members this machine knows of, itself included, by state.
# TYPE uncloud_gossip_members gauge
uncloud_gossip_members{state="alive"} 2
uncloud_gossip_members{state="dead"} 0
uncloud_gossip_members{state="left"} 0
uncloud_gossip_members{state="suspect"} 1
`,
		},
		{
			name: "state: known kinds with zeros, odd prefixes summed as other",
			src: Sources{State: func(context.Context) (State, error) {
				return State{Keys: map[string]int{"machines": 3, "containers": 7, "evil1": 1, "evil2": 2},
					Blocks: 42, Heads: 1, BlocksFetched: 30, BlocksRejected: 2, Unverified: 4}, nil
			}},
			want: `
# HELP uncloud_state_blocks_fetched_total Verified DAG blocks fetched from other machines.
# TYPE uncloud_state_blocks_fetched_total counter
uncloud_state_blocks_fetched_total 30
# HELP uncloud_state_blocks_rejected_total DAG blocks refused because their bytes did not hash to their CID, or streams that were malformed.
# TYPE uncloud_state_blocks_rejected_total counter
uncloud_state_blocks_rejected_total 2
# HELP uncloud_state_dag_blocks DAG blocks in this machine's replica of the state.
# TYPE uncloud_state_dag_blocks gauge
uncloud_state_dag_blocks 42
# HELP uncloud_state_dag_heads Current DAG heads of this machine's replica (1 when nothing is being merged).
# TYPE uncloud_state_dag_heads gauge
uncloud_state_dag_heads 1
# HELP uncloud_state_records Records in this machine's replica of the state, by kind (the key's first path segment), verified or not.
# TYPE uncloud_state_records gauge
uncloud_state_records{kind="certs"} 0
uncloud_state_records{kind="containers"} 7
uncloud_state_records{kind="history"} 0
uncloud_state_records{kind="machines"} 3
uncloud_state_records{kind="other"} 3
uncloud_state_records{kind="revoked"} 0
uncloud_state_records{kind="secrets"} 0
uncloud_state_records{kind="services"} 0
uncloud_state_records{kind="tokens"} 0
# HELP uncloud_state_unverified_reads_total Reads of records the verifier refused (unsigned, mis-signed, or signed by a machine that may not write them).
# TYPE uncloud_state_unverified_reads_total counter
uncloud_state_unverified_reads_total 4
`,
		},
		{
			name: "dns: the resolver's counters as they are",
			src: Sources{DNS: func() (DNS, bool) {
				return DNS{Queries: 100, Answered: 60, Forwarded: 30, CacheHits: 5, ServFail: 2, Dropped: 3, Denied: 1, TCPRefused: 7}, true
			}},
			metrics: []string{"uncloud_dns_queries_total", "uncloud_dns_query_results_total", "uncloud_dns_tcp_refused_total"},
			want: `
# HELP uncloud_dns_queries_total DNS messages the resolver received.
# TYPE uncloud_dns_queries_total counter
uncloud_dns_queries_total 100
# HELP uncloud_dns_query_results_total What the resolver did with queries: zone (answered from .internal), cache (answered from the forwarding cache), forwarded (sent upstream), servfail (forwards that got no answer or found no room; a subset of forwarded), dropped (responses, garbage), denied (clients outside the mesh and local networks).
# TYPE uncloud_dns_query_results_total counter
uncloud_dns_query_results_total{result="cache"} 5
uncloud_dns_query_results_total{result="denied"} 1
uncloud_dns_query_results_total{result="dropped"} 3
uncloud_dns_query_results_total{result="forwarded"} 30
uncloud_dns_query_results_total{result="servfail"} 2
uncloud_dns_query_results_total{result="zone"} 60
# HELP uncloud_dns_tcp_refused_total TCP connections to the resolver closed for want of room.
# TYPE uncloud_dns_tcp_refused_total counter
uncloud_dns_tcp_refused_total 7
`,
		},
		{
			name:    "dns not started yet: no series",
			src:     Sources{DNS: func() (DNS, bool) { return DNS{}, false }},
			metrics: []string{"uncloud_dns_queries_total"},
			want:    ``,
		},
		{
			name: "containers by Docker state, an unknown state as other",
			src: Sources{Containers: func(context.Context) (map[string]int, error) {
				return map[string]int{"running": 4, "exited": 1, "weird": 2}, nil
			}},
			want: `
# HELP uncloud_containers This machine's containers, by Docker state.
# TYPE uncloud_containers gauge
uncloud_containers{state="created"} 0
uncloud_containers{state="dead"} 0
uncloud_containers{state="exited"} 1
uncloud_containers{state="other"} 2
uncloud_containers{state="paused"} 0
uncloud_containers{state="removing"} 0
uncloud_containers{state="restarting"} 0
uncloud_containers{state="running"} 4
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &collector{ctx: context.Background(), src: tt.src, log: slog.New(slog.DiscardHandler)}
			if err := testutil.CollectAndCompare(c, strings.NewReader(tt.want), tt.metrics...); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestHandshakeAge: the age is measured at scrape time, so it grows
// between scrapes without anyone updating it.
func TestHandshakeAge(t *testing.T) {
	hs := time.Now().Add(-time.Hour)
	c := &collector{ctx: context.Background(), log: slog.New(slog.DiscardHandler), src: Sources{
		Peers: func(context.Context) ([]Peer, error) { return []Peer{{Name: "m2", LastHandshake: hs}}, nil },
	}}
	reg, err := NewRegistry(context.Background(), c.src, nil)
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "uncloud_peer_handshake_age_seconds" {
			age := mf.GetMetric()[0].GetGauge().GetValue()
			if age < 3600 || age > 3600*2 {
				t.Errorf("handshake an hour ago: age %v s", age)
			}
		}
	}
	// The runtime and process collectors are in every agent's registry.
	for _, name := range []string{"uncloud_peer_handshake_age_seconds", "go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes"} {
		if !found[name] {
			t.Errorf("registry lacks %s", name)
		}
	}
	if n := testutil.CollectAndCount(c, "uncloud_peer_handshake_age_seconds"); n != 1 {
		t.Errorf("%d handshake age series, want 1", n)
	}
}
