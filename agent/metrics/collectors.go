package metrics

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Peer is one WireGuard peer as a scrape finds it.
type Peer struct {
	Name          string // the machine's name; the key's first characters when no record names it
	RxBytes       uint64
	TxBytes       uint64
	LastHandshake time.Time // zero: no handshake yet
	// Path is the NAT layer's word: direct, relayed, probing or
	// rotating; empty when the NAT layer does not know the peer.
	Path string
	Via  string        // the relaying machine, when relayed
	RTT  time.Duration // zero: not measured
}

// DNS are the resolver's counters (resolver.Stats, read once per scrape).
type DNS struct {
	Queries    uint64 // messages received
	Answered   uint64 // answered from the zone
	Forwarded  uint64 // sent to upstreams (cache misses)
	CacheHits  uint64
	ServFail   uint64 // forwards that got no answer, or found no room
	Dropped    uint64 // not answered: responses, garbage
	Denied     uint64 // not answered: a client outside the allowed networks
	TCPRefused uint64 // TCP connections closed for want of room
}

// State is what the replicated state holds (crdt.Counts, read once per
// scrape) and what it did.
type State struct {
	Keys           map[string]int // live keys by first path segment
	Blocks         int
	Heads          int
	BlocksFetched  uint64
	BlocksRejected uint64
	Unverified     uint64 // reads of records the verifier refused
}

// Sources are what the collectors read at each scrape. A nil source is a
// part not running on this agent: its series are left out. A source that
// fails is logged and its series left out of that scrape.
type Sources struct {
	Peers      func(ctx context.Context) ([]Peer, error)
	Members    func() map[string]int // gossip members by state (alive, suspect, dead, left)
	State      func(ctx context.Context) (State, error)
	DNS        func() (DNS, bool) // false: the resolver is not running (yet)
	Containers func(ctx context.Context) (map[string]int, error)
}

// scrapeTimeout bounds one scrape's reads, so a stuck part cannot hold
// a scrape (and its goroutine) forever.
const scrapeTimeout = 5 * time.Second

// recordKinds are the state's top-level prefixes (package record's); a
// key under any other is counted as "other", so a member writing odd
// keys cannot make series without bound.
var recordKinds = []string{"certs", "containers", "history", "machines", "revoked", "secrets", "services", "tokens"}

// containerStates are Docker's; anything else is "other".
var containerStates = []string{"created", "running", "restarting", "paused", "exited", "removing", "dead"}

// memberStates are gossip's (gossip.MemberState's names).
var memberStates = []string{"alive", "suspect", "dead", "left"}

var (
	descPeerRx        = prometheus.NewDesc("uncloud_peer_receive_bytes_total", "Bytes received from the peer through WireGuard since its peer entry was made.", []string{"peer"}, nil)
	descPeerTx        = prometheus.NewDesc("uncloud_peer_transmit_bytes_total", "Bytes sent to the peer through WireGuard since its peer entry was made.", []string{"peer"}, nil)
	descPeerHandshake = prometheus.NewDesc("uncloud_peer_handshake_age_seconds", "Time since the last WireGuard handshake with the peer (absent before the first).", []string{"peer"}, nil)
	descPeerPath      = prometheus.NewDesc("uncloud_peer_path", "1 for the path the peer's traffic takes: direct, relayed (via names the relaying machine), probing or rotating.", []string{"peer", "path", "via"}, nil)
	descPeerRTT       = prometheus.NewDesc("uncloud_peer_rtt_seconds", "Round-trip time to the peer on its current path, as the NAT layer last measured it.", []string{"peer"}, nil)
	descPeers         = prometheus.NewDesc("uncloud_peers", "WireGuard peers configured on this machine.", nil, nil)

	descMembers = prometheus.NewDesc("uncloud_gossip_members", "Gossip members this machine knows of, itself included, by state.", []string{"state"}, nil)

	descRecords        = prometheus.NewDesc("uncloud_state_records", "Records in this machine's replica of the state, by kind (the key's first path segment), verified or not.", []string{"kind"}, nil)
	descBlocks         = prometheus.NewDesc("uncloud_state_dag_blocks", "DAG blocks in this machine's replica of the state.", nil, nil)
	descHeads          = prometheus.NewDesc("uncloud_state_dag_heads", "Current DAG heads of this machine's replica (1 when nothing is being merged).", nil, nil)
	descFetched        = prometheus.NewDesc("uncloud_state_blocks_fetched_total", "Verified DAG blocks fetched from other machines.", nil, nil)
	descBlocksRejected = prometheus.NewDesc("uncloud_state_blocks_rejected_total", "DAG blocks refused because their bytes did not hash to their CID, or streams that were malformed.", nil, nil)
	descUnverified     = prometheus.NewDesc("uncloud_state_unverified_reads_total", "Reads of records the verifier refused (unsigned, mis-signed, or signed by a machine that may not write them).", nil, nil)

	descDNSQueries  = prometheus.NewDesc("uncloud_dns_queries_total", "DNS messages the resolver received.", nil, nil)
	descDNSResults  = prometheus.NewDesc("uncloud_dns_query_results_total", "What the resolver did with queries: zone (answered from .internal), cache (answered from the forwarding cache), forwarded (sent upstream), servfail (forwards that got no answer or found no room; a subset of forwarded), dropped (responses, garbage), denied (clients outside the mesh and local networks).", []string{"result"}, nil)
	descDNSTCPRefus = prometheus.NewDesc("uncloud_dns_tcp_refused_total", "TCP connections to the resolver closed for want of room.", nil, nil)

	descContainers = prometheus.NewDesc("uncloud_containers", "This machine's containers, by Docker state.", []string{"state"}, nil)
)

// collector turns Sources into samples at scrape time.
type collector struct {
	ctx context.Context // the agent's lifetime: a scrape ends with it
	src Sources
	log *slog.Logger
}

// Describe sends every description whose source exists.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	if c.src.Peers != nil {
		for _, d := range []*prometheus.Desc{descPeerRx, descPeerTx, descPeerHandshake, descPeerPath, descPeerRTT, descPeers} {
			ch <- d
		}
	}
	if c.src.Members != nil {
		ch <- descMembers
	}
	if c.src.State != nil {
		for _, d := range []*prometheus.Desc{descRecords, descBlocks, descHeads, descFetched, descBlocksRejected, descUnverified} {
			ch <- d
		}
	}
	if c.src.DNS != nil {
		for _, d := range []*prometheus.Desc{descDNSQueries, descDNSResults, descDNSTCPRefus} {
			ch <- d
		}
	}
	if c.src.Containers != nil {
		ch <- descContainers
	}
}

// Collect reads each source once.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(c.ctx, scrapeTimeout)
	defer cancel()
	now := time.Now()
	if c.src.Peers != nil {
		if peers, err := c.src.Peers(ctx); err != nil {
			c.log.Warn("metrics: read peers", "err", err)
		} else {
			collectPeers(ch, peers, now)
		}
	}
	if c.src.Members != nil {
		collectMembers(ch, c.src.Members())
	}
	if c.src.State != nil {
		if st, err := c.src.State(ctx); err != nil {
			c.log.Warn("metrics: read state counts", "err", err)
		} else {
			collectState(ch, st)
		}
	}
	if c.src.DNS != nil {
		if st, ok := c.src.DNS(); ok {
			collectDNS(ch, st)
		}
	}
	if c.src.Containers != nil {
		if byState, err := c.src.Containers(ctx); err != nil {
			c.log.Warn("metrics: read containers", "err", err)
		} else {
			collectContainers(ch, byState)
		}
	}
}

func collectPeers(ch chan<- prometheus.Metric, peers []Peer, now time.Time) {
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(peers)))
	// Sorted, so that of two peers with one name the same one is kept.
	peers = slices.Clone(peers)
	slices.SortStableFunc(peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	seen := map[string]bool{}
	for _, p := range peers {
		// Two peers with one name (a machine and a stale seed entry)
		// would make a duplicate series, which fails the whole scrape.
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		ch <- prometheus.MustNewConstMetric(descPeerRx, prometheus.CounterValue, float64(p.RxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(descPeerTx, prometheus.CounterValue, float64(p.TxBytes), p.Name)
		if !p.LastHandshake.IsZero() {
			age := max(now.Sub(p.LastHandshake), 0)
			ch <- prometheus.MustNewConstMetric(descPeerHandshake, prometheus.GaugeValue, age.Seconds(), p.Name)
		}
		if p.Path != "" {
			ch <- prometheus.MustNewConstMetric(descPeerPath, prometheus.GaugeValue, 1, p.Name, p.Path, p.Via)
		}
		if p.RTT > 0 {
			ch <- prometheus.MustNewConstMetric(descPeerRTT, prometheus.GaugeValue, p.RTT.Seconds(), p.Name)
		}
	}
}

func collectMembers(ch chan<- prometheus.Metric, byState map[string]int) {
	// Every state is reported, zeros included, so "dead == 0" is a
	// series an alert can test rather than an absent one.
	for _, s := range memberStates {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(byState[s]), s)
	}
}

func collectState(ch chan<- prometheus.Metric, st State) {
	for kind, n := range bounded(st.Keys, recordKinds) {
		ch <- prometheus.MustNewConstMetric(descRecords, prometheus.GaugeValue, float64(n), kind)
	}
	ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(st.Blocks))
	ch <- prometheus.MustNewConstMetric(descHeads, prometheus.GaugeValue, float64(st.Heads))
	ch <- prometheus.MustNewConstMetric(descFetched, prometheus.CounterValue, float64(st.BlocksFetched))
	ch <- prometheus.MustNewConstMetric(descBlocksRejected, prometheus.CounterValue, float64(st.BlocksRejected))
	ch <- prometheus.MustNewConstMetric(descUnverified, prometheus.CounterValue, float64(st.Unverified))
}

func collectDNS(ch chan<- prometheus.Metric, st DNS) {
	ch <- prometheus.MustNewConstMetric(descDNSQueries, prometheus.CounterValue, float64(st.Queries))
	for _, r := range []struct {
		result string
		n      uint64
	}{
		{"zone", st.Answered}, {"cache", st.CacheHits}, {"forwarded", st.Forwarded},
		{"servfail", st.ServFail}, {"dropped", st.Dropped}, {"denied", st.Denied},
	} {
		ch <- prometheus.MustNewConstMetric(descDNSResults, prometheus.CounterValue, float64(r.n), r.result)
	}
	ch <- prometheus.MustNewConstMetric(descDNSTCPRefus, prometheus.CounterValue, float64(st.TCPRefused))
}

func collectContainers(ch chan<- prometheus.Metric, byState map[string]int) {
	for state, n := range bounded(byState, containerStates) {
		ch <- prometheus.MustNewConstMetric(descContainers, prometheus.GaugeValue, float64(n), state)
	}
}

// bounded maps counts onto known label values, zeros included, and
// adds up the rest as "other" (present only when non-zero).
func bounded(counts map[string]int, known []string) map[string]int {
	out := make(map[string]int, len(known)+1)
	for _, k := range known {
		out[k] = 0
	}
	for k, n := range counts {
		if _, ok := out[k]; ok {
			out[k] += n
		} else {
			out["other"] += n
		}
	}
	if out["other"] == 0 {
		delete(out, "other")
	}
	return out
}
