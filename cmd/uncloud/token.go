package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type tokenCmd struct {
	New tokenNewCmd `cmd:"" default:"withargs" help:"Print a new join token (the default)."`
	Ls  tokenLsCmd  `cmd:"" help:"List the tokens this machine issued."`
	Rm  tokenRmCmd  `cmd:"" help:"Revoke a token."`
}

type tokenNewCmd struct {
	TTL  time.Duration `name:"ttl" default:"1h" help:"How long the token is valid (1m to 720h)."`
	Uses int           `default:"1" help:"How many machines may join with it; counted by this machine."`
	// Local is for a joiner on this machine's own network: without it a
	// machine behind a NAT refuses, naming a member that can be reached.
	Local bool `help:"Issue the token even though this machine is behind a NAT with no public endpoint (the new machine is on the same network)."`
}

func (c tokenNewCmd) Run(g *globals) error {
	info, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.TokenInfo, error) {
		return a.CreateToken(ctx, api.TokenRequest{TTL: c.TTL, Uses: c.Uses, Local: c.Local})
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Join token %s, valid until %s for %d machine(s).\n", info.ID, info.Expires.Local().Format(time.RFC1123), info.UsesLeft)
	fmt.Fprintln(os.Stderr, "It is a secret: whoever has it can add a machine to this network. Revoke it with 'uncloud token rm "+info.ID+"'.")
	fmt.Fprintln(os.Stderr, "On the new machine run: uncloud join -   (then paste it; as an argument it would show in ps and shell history)")
	fmt.Println(info.Token)
	return nil
}

type tokenLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c tokenLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.TokenInfo, error) {
		return a.ListTokens(ctx)
	}, renderTokens)
}

// renderTokens shows the tokens as a table.
func renderTokens(tokens []api.TokenInfo) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tUSES LEFT\tEXPIRES")
	for _, t := range tokens {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", t.ID, t.State, t.UsesLeft, t.Expires.Local().Format(time.RFC3339))
	}
	return w.Flush()
}

type tokenRmCmd struct {
	ID string `arg:"" help:"Token ID, as 'uncloud token ls' shows it."`
}

func (c tokenRmCmd) Run(g *globals) error {
	_, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (struct{}, error) {
		return struct{}{}, a.RevokeToken(ctx, c.ID)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Token %s revoked.\n", c.ID)
	return nil
}
