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

type statusCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c statusCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) (api.Status, error) {
		return a.Status(ctx)
	}, renderStatus)
}

// renderStatus shows the machine and its WireGuard peers.
func renderStatus(st api.Status) error {
	fmt.Printf("machine %s (%s) in network %s\naddress %s, %s mode, WireGuard port %d, uncloud %s\n",
		st.Name, st.MachineID, st.NetworkID, st.Address, st.Mode, st.Port, st.Version)
	fmt.Printf("roles %s, gossip key %s (rotation %d)\n", dash(strings.Join(st.Roles, ",")), st.GossipKey, st.GossipKeyEpoch)
	if st.HostNet != nil {
		fmt.Println(hostNetLine(*st.HostNet))
	}
	if len(st.Peers) == 0 {
		fmt.Println("no peers yet")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nPEER\tALLOWED IPS\tENDPOINT\tLAST HANDSHAKE\tRX\tTX")
	for _, p := range st.Peers {
		name := p.Machine
		if name == "" {
			name = p.PublicKey[:8] + "…"
		}
		hs := "never"
		if !p.LastHandshake.IsZero() {
			hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\n", name, strings.Join(p.AllowedIPs, ","), p.Endpoint, hs, p.RxBytes, p.TxBytes)
	}
	return w.Flush()
}
