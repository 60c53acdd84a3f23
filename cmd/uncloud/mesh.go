package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type meshCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

// Run shows, per peer, how this machine reaches it: direct or relayed
// (through which machine), the endpoint in use, the peer's NAT type, the
// last handshake and the probe round-trip time.
func (c meshCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) (api.MeshStatus, error) {
		return a.Mesh(ctx)
	}, renderMesh)
}

// renderMesh shows the paths to the peers and the relay and STUN counters.
func renderMesh(st api.MeshStatus) error {
	fmt.Printf("machine %s: NAT %s, keepalive %s\n", st.Machine, st.NAT, st.Keepalive)
	fmt.Printf("candidates: %s\n", dash(strings.Join(st.Candidates, " ")))
	if len(st.Reflexive) > 0 {
		fmt.Printf("seen from outside as: %s\n", strings.Join(st.Reflexive, " "))
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PEER\tPATH\tVIA\tENDPOINT\tNAT\tHANDSHAKE\tRTT\tSINCE")
	for _, p := range st.Peers {
		hs := "-"
		if !p.LastHandshake.IsZero() {
			hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
		}
		rtt := "-"
		if p.RTT > 0 {
			rtt = p.RTT.Round(10 * time.Microsecond).String()
		}
		since := "-"
		if !p.Since.IsZero() {
			since = time.Since(p.Since).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Machine, p.Path, dash(p.Via), dash(p.Endpoint),
			dash(p.NAT), hs, rtt, since)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("\nrelay (budget %g Mbit/s per sender): forwarded %d (%d bytes), delivered here %d, sent %d, dropped %d, replayed %d, stale %d, rate-limited %d, no route %d\n",
		st.Relay.BudgetMbps, st.Relay.Forwarded, st.Relay.ForwardedBytes, st.Relay.Delivered, st.Relay.Sent, st.Relay.Dropped,
		st.Relay.Replayed, st.Relay.Stale, st.Relay.RateLimited, st.Relay.NoRoute)
	fmt.Printf("stun: received %d, answered %d, garbage %d, rejected %d, duplicate %d, unsolicited %d, limited %d, candidates filtered %d, probes limited %d; socket: unknown packets %d\n",
		st.STUN.Received, st.STUN.Answered, st.STUN.Garbage, st.STUN.Rejected, st.STUN.Duplicate, st.STUN.Unsolicited,
		st.STUN.Limited, st.STUN.Filtered, st.STUN.ProbesLimited, st.Socket.Unknown)
	return nil
}
