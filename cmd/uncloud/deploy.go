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
}

func (deployCmd) Help() string {
	return `Reads a Compose file (image, command, environment, env_file, ports in uncloud's syntax, volumes, deploy.replicas, deploy.mode, healthcheck.test, restart, and x-machines: [name, …] for placement), shows the plan (create, replace, remove, per machine), then applies it. A changed service is replaced container by container, start-first: the new container must run and be healthy before the old one is removed; a new one that fails stops the rollout and the old ones keep serving. Keys uncloud does not support are named in warnings.`
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
	client, err := api.NewClient(g.Connect, api.SSHOptions{})
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	inPlan := true
	fmt.Println("Plan:")
	return client.Deploy(ctx, api.DeployRequest{Services: services, DryRun: c.DryRun}, func(e api.DeployEvent) error {
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
