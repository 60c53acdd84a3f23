package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type machineCmd struct {
	Ls      machineLsCmd      `cmd:"" help:"List the machines of the network as this one sees them."`
	Rm      machineRmCmd      `cmd:"" help:"Remove a machine: its keys are revoked everywhere, for good, and the gossip key is rotated."`
	Rename  machineRenameCmd  `cmd:"" help:"Rename a machine. The machine itself makes the change, so it must be reachable."`
	Role    machineRoleCmd    `cmd:"" help:"Give a machine a role or take it away (roles: ingress)."`
	Label   machineLabelCmd   `cmd:"" help:"Set or remove a machine's labels, for placement constraints (node.labels.KEY==VALUE)."`
	Add     machineAddCmd     `cmd:"" help:"Install uncloud on a host over SSH and add it to this network."`     // machine_add.go
	Init    machineInitCmd    `cmd:"" help:"Install uncloud on a host over SSH and create a new network there."` // machine_add.go
	Upgrade machineUpgradeCmd `cmd:"" help:"Replace the agent binary of machines over the mesh, one at a time."` // machine_upgrade.go
}

type machineRenameCmd struct {
	Name    string `arg:"" help:"Current machine name or ID."`
	NewName string `arg:"" help:"New name: a DNS label (lowercase letters, digits, '-'); the machine becomes <new-name>.machine.internal."`
}

func (c machineRenameCmd) Run(g *globals) error {
	m, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.MachineInfo, error) {
		return a.UpdateMachine(ctx, c.Name, api.MachineUpdate{Name: c.NewName})
	})
	if err != nil {
		return err
	}
	fmt.Printf("Machine %s is now %s; every machine sees the new name within seconds.\n", c.Name, m.Name)
	return nil
}

type machineRoleCmd struct {
	Add machineRoleAddCmd `cmd:"" help:"Add a role: 'uncloud machine role add web-1 ingress'."`
	Rm  machineRoleRmCmd  `cmd:"" help:"Remove a role: 'uncloud machine role rm web-1 ingress'."`
}

type machineRoleArgs struct {
	Name  string   `arg:"" help:"Machine name or ID."`
	Roles []string `arg:"" help:"Roles (ingress: serve published services on :80 and :443)."`
}

type machineRoleAddCmd struct{ machineRoleArgs }
type machineRoleRmCmd struct{ machineRoleArgs }

func (c machineRoleAddCmd) Run(g *globals) error {
	return changeRoles(g, c.Name, api.MachineUpdate{AddRoles: c.Roles})
}

func (c machineRoleRmCmd) Run(g *globals) error {
	return changeRoles(g, c.Name, api.MachineUpdate{RemoveRoles: c.Roles})
}

func changeRoles(g *globals, name string, u api.MachineUpdate) error {
	m, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.MachineInfo, error) {
		return a.UpdateMachine(ctx, name, u)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Machine %s roles: %s\n", m.Name, dash(strings.Join(m.Roles, ",")))
	return nil
}

type machineRmCmd struct {
	Name string `arg:"" help:"Machine name or ID."`
}

func (c machineRmCmd) Run(g *globals) error {
	res, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.RemoveResult, error) {
		return a.RemoveMachine(ctx, c.Name)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Machine %s removed: its keys are revoked, every machine drops it as a peer.\n", res.Name)
	fmt.Printf("Gossip key rotated: %d of %d other machines have the new key", res.Rotated, res.Machines)
	if len(res.Missed) > 0 {
		fmt.Printf("; %s will fetch it when reachable", strings.Join(res.Missed, ", "))
	}
	fmt.Println(".")
	if len(res.Admitted) > 0 {
		fmt.Printf("%s admitted %s, which stay trusted; if %s was compromised, remove them too.\n",
			res.Name, strings.Join(res.Admitted, ", "), res.Name)
	}
	fmt.Println("To bring the machine back, wipe its data dir and join it again with a new token.")
	return nil
}

type machineLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c machineLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.MachineInfo, error) {
		return a.Machines(ctx)
	}, renderMachines)
}

// renderMachines shows the machines as a table, then why some run no containers.
func renderMachines(machines []api.MachineInfo) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tADDRESS\tSUBNET\tMODE\tCONTAINERS\tEXPOSED\tROLES\tENDPOINT\tHANDSHAKE\tVERSION\tID")
	var why []string // the machines that run no containers, and why
	for _, m := range machines {
		hs := "-"
		if !m.LastHandshake.IsZero() {
			hs = time.Since(m.LastHandshake).Round(time.Second).String() + " ago"
		}
		can, reason, _ := strings.Cut(m.Containers, ": ")
		if reason != "" {
			why = append(why, fmt.Sprintf("%s runs no containers: %s", m.Name, reason))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, m.Address, m.Subnet,
			dash(m.Mode), dash(can), dash(exposedShort(m.Exposed)), dash(strings.Join(m.Roles, ",")), dash(m.Endpoint), hs, dash(m.Version), m.ID)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(why) > 0 {
		fmt.Println()
		for _, l := range why {
			fmt.Println(l)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type machineLabelCmd struct {
	Add machineLabelAddCmd `cmd:"" help:"Set labels: 'uncloud machine label add m1 disk=ssd zone=a'."`
	Rm  machineLabelRmCmd  `cmd:"" help:"Remove labels: 'uncloud machine label rm m1 disk'."`
}

type machineLabelAddCmd struct {
	Name   string   `arg:"" help:"Machine name or ID."`
	Labels []string `arg:"" help:"KEY=VALUE labels."`
}

type machineLabelRmCmd struct {
	Name string   `arg:"" help:"Machine name or ID."`
	Keys []string `arg:"" help:"Label keys (KEY or KEY=VALUE)."`
}

func (c machineLabelAddCmd) Run(g *globals) error {
	set := map[string]string{}
	for _, kv := range c.Labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("label %q: want KEY=VALUE", kv)
		}
		set[k] = v
	}
	return changeLabels(g, c.Name, api.MachineUpdate{SetLabels: set})
}

func (c machineLabelRmCmd) Run(g *globals) error {
	var keys []string
	for _, k := range c.Keys {
		k, _, _ = strings.Cut(k, "=")
		keys = append(keys, k)
	}
	return changeLabels(g, c.Name, api.MachineUpdate{RemoveLabels: keys})
}

func changeLabels(g *globals, name string, u api.MachineUpdate) error {
	m, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.MachineInfo, error) {
		return a.UpdateMachine(ctx, name, u)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Machine %s labels: %s\n", m.Name, dash(formatLabels(m.Labels)))
	return nil
}

// formatLabels is k=v,k=v sorted by key.
func formatLabels(l map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		out = append(out, k+"="+l[k])
	}
	return strings.Join(out, ",")
}

// exposedShort is "22,53/udp,8080" (tcp unsaid), for a table cell.
func exposedShort(ports []string) string {
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = strings.TrimSuffix(p, "/tcp")
	}
	return strings.Join(out, ",")
}
