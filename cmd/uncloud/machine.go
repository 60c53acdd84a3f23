package main

import (
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type machineCmd struct {
	Ls machineLsCmd `cmd:"" help:"List the machines of the network as this one sees them."`
	Rm machineRmCmd `cmd:"" help:"Remove a machine: its keys are revoked everywhere, for good."`
}

type machineRmCmd struct {
	Name string `arg:"" help:"Machine name or ID."`
}

func (c machineRmCmd) Run(g *globals) error {
	if err := callAgent(g, "DELETE", "/v1/machines/"+url.PathEscape(c.Name), nil, nil); err != nil {
		return err
	}
	fmt.Printf("Machine %s removed: its keys are revoked, every machine drops it as a peer. To bring it back, wipe its data dir and join it again with a new token.\n", c.Name)
	return nil
}

type machineLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c machineLsCmd) Run(g *globals) error {
	var machines []api.MachineInfo
	if err := callAgent(g, "GET", "/v1/machines", nil, &machines); err != nil {
		return err
	}
	if c.Output == "json" {
		return printJSON(machines)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tADDRESS\tSUBNET\tMODE\tENDPOINT\tHANDSHAKE\tVERSION\tID")
	for _, m := range machines {
		hs := "-"
		if !m.LastHandshake.IsZero() {
			hs = time.Since(m.LastHandshake).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, m.Address, m.Subnet,
			dash(m.Mode), dash(m.Endpoint), hs, dash(m.Version), m.ID)
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
