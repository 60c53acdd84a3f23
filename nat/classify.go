package nat

import (
	"net/netip"
	"sort"
	"time"
)

// Type is what stands between a machine's WireGuard socket and the rest
// of the network, as far as its mappings show.
type Type string

const (
	// TypeUnknown: fewer than two machines at different addresses answered.
	TypeUnknown Type = "unknown"
	// TypeNone: the address seen from outside is one of the machine's own.
	TypeNone Type = "none"
	// TypeEndpointIndependent: one mapping for every destination (hole
	// punching works).
	TypeEndpointIndependent Type = "endpoint-independent"
	// TypeSymmetric: the mapping depends on the destination, so the
	// address one machine sees is useless to another.
	TypeSymmetric Type = "symmetric"
)

// Observation is one answer to a binding request: the machine (or STUN
// server) at Server saw this machine's socket as Mapped.
type Observation struct {
	Server netip.AddrPort
	Mapped netip.AddrPort
	At     time.Time
}

// observationTTL drops answers old enough that the mapping may have
// changed (a NAT reboot, a new address).
const observationTTL = 2 * time.Minute

// classifyWindow is how close in time two answers must be to be compared.
const classifyWindow = 45 * time.Second

// Classify tells the NAT type from recent observations and the machine's
// own addresses. Mappings seen by servers at different IP addresses are
// compared (a server at the same IP on another port tells nothing about
// endpoint dependence at the address level): all equal means the mapping
// is endpoint-independent, any difference means symmetric. The newest
// answer per server counts, and only answers within classifyWindow of the
// newest one.
func Classify(obs []Observation, local []netip.Addr, now time.Time) Type {
	latest := map[netip.Addr]Observation{}
	for _, o := range obs {
		if now.Sub(o.At) > observationTTL || !o.Mapped.IsValid() {
			continue
		}
		if cur, ok := latest[o.Server.Addr()]; !ok || o.At.After(cur.At) {
			latest[o.Server.Addr()] = o
		}
	}
	if len(latest) == 0 {
		return TypeUnknown
	}
	// Only answers close in time to the newest are compared: after a NAT
	// reboot (a new mapping), a server that has not answered since still
	// holds the old one, which says nothing about endpoint dependence.
	var newest time.Time
	for _, o := range latest {
		if o.At.After(newest) {
			newest = o.At
		}
	}
	for k, o := range latest {
		if newest.Sub(o.At) > classifyWindow {
			delete(latest, k)
		}
	}
	for _, o := range latest {
		for _, a := range local {
			if o.Mapped.Addr() == a {
				return TypeNone
			}
		}
	}
	if len(latest) < 2 {
		return TypeUnknown
	}
	var first netip.AddrPort
	for _, o := range latest {
		if !first.IsValid() {
			first = o.Mapped
			continue
		}
		if o.Mapped != first {
			return TypeSymmetric
		}
	}
	return TypeEndpointIndependent
}

// Reflexive returns the distinct recent mapped addresses, most recently
// seen first.
func Reflexive(obs []Observation, now time.Time) []netip.AddrPort {
	last := map[netip.AddrPort]time.Time{}
	for _, o := range obs {
		if now.Sub(o.At) <= observationTTL && o.Mapped.IsValid() && o.At.After(last[o.Mapped]) {
			last[o.Mapped] = o.At
		}
	}
	out := make([]netip.AddrPort, 0, len(last))
	for ap := range last {
		out = append(out, ap)
	}
	sort.Slice(out, func(i, j int) bool {
		if !last[out[i]].Equal(last[out[j]]) {
			return last[out[i]].After(last[out[j]])
		}
		return out[i].String() < out[j].String()
	})
	return out
}
