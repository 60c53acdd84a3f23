package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/uncloud-mesh/uncloud/api"
)

type volumeCmd struct {
	Ls volumeLsCmd `cmd:"" help:"List the services' named volumes and the machines they live on."`
}

type volumeLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (volumeLsCmd) Help() string {
	return `A named volume lives on the machine that made it, and ties its service there:
later replicas and updates of the service stay on machines that hold it. A
volume of the same name on two machines is two volumes, with their own data.`
}

func (c volumeLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.VolumeInfo, error) {
		return a.Volumes(ctx)
	}, renderVolumes)
}

// renderVolumes shows the volumes as a table.
func renderVolumes(vs []api.VolumeInfo) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tMACHINE\tDRIVER\tSERVICES\tCONTAINERS")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", v.Name, v.Machine, v.Driver, strings.Join(v.Services, ","), v.Containers)
	}
	return tw.Flush()
}
