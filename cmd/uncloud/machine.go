package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type machineCmd struct {
	Ls machineLsCmd `cmd:"" help:"List the machines of the network as this one sees them."`
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
