package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type deployCmd struct {
	File   string `short:"f" help:"Compose file." default:"compose.yaml" type:"path"`
	DryRun bool   `help:"Show the plan only."`
	Pull   string `help:"When machines pull images: missing, always or never; default: each service's pull_policy (missing when it has none). Tags are re-resolved to digests unless never." enum:",missing,always,never" default:""`
}

func (deployCmd) Help() string {
	return `Reads a Compose file (image, command, environment, env_file, ports in uncloud's syntax, volumes, deploy.replicas, deploy.mode, healthcheck.test, restart, and x-machines: [name, …] for placement), shows the plan (create, replace, remove, per machine), then applies it. A changed service is replaced container by container, start-first: the new container must run and be healthy before the old one is removed; a new one that fails stops the rollout and the old ones keep serving. Keys uncloud does not support are named in warnings.

Each image's tag is resolved again to a digest (unless the pull policy is never): a tag that moved replaces the service's containers with the new digest; the same digest leaves them alone. Machines that lack the image pull it first, with the credentials of 'docker login' for its registry; a failed pull stops the deploy before anything changes.

Examples:
  uncloud deploy
  uncloud deploy -f prod.yaml --dry-run
  uncloud deploy --pull always`
}

func (c deployCmd) Run(g *globals) error {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	services, warnings, err := parseCompose(ctx, c.File, env)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	var images []string
	for i := range services {
		if c.Pull != "" {
			services[i].Pull = c.Pull
		}
		images = append(images, services[i].Image)
	}
	auths, err := dockerCredentials{}.forImages(images)
	if err != nil {
		return err
	}
	client, err := api.NewClient(g.Connect, api.SSHOptions{})
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	inPlan := true
	fmt.Println("Plan:")
	pulls := newImageProgress(os.Stderr)
	defer pulls.Wait()
	req := api.DeployRequest{Services: services, DryRun: c.DryRun, RegistryAuths: auths}
	return client.Deploy(ctx, req, func(e api.DeployEvent) error {
		if e.Image != nil {
			pulls.Update(*e.Image)
			return nil
		}
		if inPlan && !e.Plan {
			inPlan = false
			fmt.Println("Applying:")
		}
		line := "  " + e.Action + " " + e.Service
		if e.Container != "" {
			line += " " + e.Container
		}
		if e.Machine != "" {
			line += " on " + e.Machine
		}
		if e.Detail != "" {
			line += ": " + e.Detail
		}
		fmt.Println(line)
		return nil
	})
}
