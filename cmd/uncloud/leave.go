package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type leaveCmd struct {
	Yes        bool   `short:"y" help:"Do not ask (needed without a terminal)."`
	Move       bool   `help:"First start this machine's replicas on other machines, healthy, then remove them here (refused if any service cannot move)."`
	DataDir    string `help:"The agent's data dir." default:"${datadir}" placeholder:"DIR"`
	UnitDir    string `help:"Where 'uncloud install' wrote the systemd unit." default:"/etc/systemd/system" placeholder:"DIR"`
	DockerHost string `help:"Docker Engine address (default: DOCKER_HOST or unix:///var/run/docker.sock)." env:"DOCKER_HOST" placeholder:"unix:///PATH"`
}

func (leaveCmd) Help() string {
	return `Takes this machine out of its network, from the machine itself. It shows the plan first and asks on a terminal (without one it needs --yes), then:

  1. asks another member to remove this machine: the removal 'uncloud machine rm' runs there (its keys are revoked everywhere, its record deleted, the gossip key rotated); a machine cannot revoke itself;
  2. stops the local agent (the systemd unit is disabled and stopped, if 'uncloud install' made one);
  3. stops and removes this machine's containers (after the agent, which would otherwise start them again). Their replicas are not moved unless --move: then, before step 1, each service with containers here gets as many new ones on other machines (placed as its constraints allow), each healthy before any here is removed; if a service cannot move, the plan says why and nothing is done.

The interface, routes, firewall rules and data dir stay until 'uncloud uninstall --purge', which the command suggests at the end.

Examples:
  sudo uncloud leave
  sudo uncloud leave --move
  sudo uncloud leave --yes && sudo uncloud uninstall --purge --yes`
}

func (c leaveCmd) Run(g *globals) error {
	if os.Geteuid() != 0 {
		return errors.New("leave stops the agent and this machine's containers: run it as root (sudo uncloud leave)")
	}
	v, err := readSelfView(g)
	if err != nil {
		return fmt.Errorf("leave needs this machine's agent running (it asks another member through it): %w", err)
	}
	var others []string
	for _, m := range v.machines {
		if m.ID != v.self.MachineID {
			others = append(others, fmt.Sprintf("%s (%s)", m.Name, m.State))
		}
	}
	if len(others) == 0 {
		return fmt.Errorf("%s is the only member of its network: there is nothing to leave; 'uncloud uninstall --purge' removes it", v.self.Name)
	}
	un := uninstallCmd{DataDir: c.DataDir, UnitDir: c.UnitDir, DockerHost: c.DockerHost}
	var local []cleanupStep
	for _, s := range un.steps(socketPath(g.Connect)) {
		if s.what == "agent" || s.what == "containers" {
			local = append(local, s)
		}
	}
	ctx := context.Background()
	fmt.Printf("%s leaves network %s:\n", v.self.Name, v.self.NetworkID)
	fmt.Printf("  network: another member (one of %s) removes %s: its keys are revoked, its record deleted, the gossip key rotated\n",
		strings.Join(others, ", "), v.self.Name)
	for _, l := range planOf(ctx, local) {
		fmt.Println(l)
	}
	if c.Move {
		if err := c.planMove(g, v.self.MachineID); err != nil {
			return err
		}
		fmt.Println("The host's interface, rules and data stay until 'uncloud uninstall --purge'.")
	} else {
		fmt.Println("Services whose replicas run here are not moved; the host's interface, rules and data stay until 'uncloud uninstall --purge'.")
	}
	if err := confirm(c.Yes, "Leave the network?", "leave"); err != nil {
		return err
	}
	if c.Move {
		if err := c.move(g, v.self.MachineID); err != nil {
			return fmt.Errorf("%s is still a member: %w", v.self.Name, err)
		}
	}

	res, err := agentCall(g, shortCommand+leaveGrace, func(ctx context.Context, a *api.Client) (api.LeaveResult, error) {
		return a.Leave(ctx)
	})
	if err != nil {
		return fmt.Errorf("%s is still a member (nothing was stopped): %w", v.self.Name, err)
	}
	fmt.Printf("✓ network: %s removes %s from the network (keys revoked, record deleted, gossip key rotated)\n", res.By, res.Name)
	failed := runSteps(ctx, local)
	if len(failed) > 0 {
		return fmt.Errorf("%s left the network, but %d step(s) failed here (%s): 'uncloud uninstall' finishes them",
			v.self.Name, len(failed), strings.Join(failed, ", "))
	}
	fmt.Printf("%s has left. 'uncloud uninstall --purge' removes the rest from this host (interface, routes, firewall rules, Docker network, data dir).\n", v.self.Name)
	return nil
}

// leaveGrace is how long beyond a short command the agent may spend
// asking members in turn (each within its own bound).
const leaveGrace = 90 * time.Second
