// Package metrics owns the agent's Prometheus exposition: a registry per
// agent (never the process-wide default one), the collectors that read
// the agent's parts at scrape time (peers, gossip, the replicated state,
// DNS, containers) besides the Go runtime and process collectors, and
// the /metrics listener with its rule on where it may listen.
//
// The collectors hold no counters of their own: each scrape calls the
// Sources the agent gave and turns what they return into samples, so the
// hot paths (packets, DNS queries) keep the counters they already had and
// nothing is counted twice. What is counted per request and has no other
// home, the ingress's requests and latencies, lives in package ingress.
//
// Labels are bounded by the network, not by clients: peers and hosts are
// machines and published host names; nothing is labelled by container ID
// or client address.
package metrics
