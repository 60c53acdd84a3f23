package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/user"
	"text/tabwriter"

	"github.com/uncloud-mesh/uncloud/api"
)

// history and rollback: a service's versions and the way back to one.

type historyCmd struct {
	Service string `arg:"" help:"Service name."`
	Output  string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (historyCmd) Help() string {
	return `Each run, deploy or rollback that changes a service's spec is a version: when,
the image and its digest, the machine that got the command and the user@host
of the CLI that sent it. The last 10 are kept, newest first; * marks the one
that runs now.`
}

func (c historyCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.ServiceVersion, error) {
		return a.History(ctx, c.Service)
	}, renderHistory)
}

// renderHistory shows the versions as a table, newest first.
func renderHistory(vs []api.ServiceVersion) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VERSION\tWHEN\tIMAGE\tDIGEST\tBY\tON\tACTION")
	for _, v := range vs {
		n := fmt.Sprint(v.N)
		if v.Current {
			n += " *"
		}
		action := v.Action
		if v.RollbackOf > 0 {
			action += fmt.Sprintf(" to %d", v.RollbackOf)
		}
		when := "-"
		if !v.Time.IsZero() {
			when = age(v.Time) + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, when, v.Image, dash(shortDigest(v.Digest)), dash(v.User),
			dash(v.Machine), action)
	}
	return w.Flush()
}

type rollbackCmd struct {
	Service string `arg:"" help:"Service name."`
	To      int    `help:"Version to go back to (see 'uncloud history'); default: the previous one."`
}

func (rollbackCmd) Help() string {
	return `Deploys an earlier version of the service again, with the exact image digest it
ran, as a rolling update of the same containers (the service's update_config;
start-first unless it says stop-first). The rollback is itself a version.

Examples:
  uncloud rollback web
  uncloud rollback web --to 3`
}

func (c rollbackCmd) Run(g *globals) error {
	client, ctx, release, err := agentFor(g, longCommand)
	if err != nil {
		return err
	}
	defer release()
	return client.Rollback(ctx, c.Service, api.RollbackRequest{To: c.To, By: cliUser()}, func(e api.DeployEvent) error {
		if e.Image != nil {
			return nil
		}
		if e.Plan {
			fmt.Println("  plan: " + stepLine(e))
		} else {
			fmt.Println("  " + stepLine(e))
		}
		return nil
	})
}

// cliUser is who runs this command, user@host, as a service's history
// shows it (a hint for people: the agent cannot check it).
func cliUser() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host, _ := os.Hostname()
	return cmp.Or(name, "unknown") + "@" + cmp.Or(host, "unknown")
}
