package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/uncloud-mesh/uncloud/api"
)

type stateCmd struct {
	Ls  stateLsCmd  `cmd:"" help:"List records under a prefix (default: all)."`
	Get stateGetCmd `cmd:"" help:"Print one record as JSON."`
}

type stateLsCmd struct {
	Prefix string `arg:"" optional:"" default:"/" help:"Key prefix, e.g. /machines/."`
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c stateLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.StateEntry, error) {
		return a.StateList(ctx, c.Prefix)
	}, renderState)
}

// renderState shows the records as a table.
func renderState(entries []api.StateEntry) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tVALUE")
	for _, e := range entries {
		fmt.Fprintf(w, "%s\t%s\n", e.Key, e.Value)
	}
	return w.Flush()
}

type stateGetCmd struct {
	Key string `arg:"" help:"Record key, e.g. /machines/<id>."`
}

func (c stateGetCmd) Run(g *globals) error {
	e, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.StateEntry, error) {
		return a.StateGet(ctx, c.Key)
	})
	if err != nil {
		return err
	}
	return printJSON(e.Value)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
