package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type execCmd struct {
	Container string   `help:"Container name; default: a running one, this machine's first."`
	Service   string   `arg:"" help:"Service name."`
	Cmd       []string `arg:"" passthrough:"" help:"Command and arguments."`
}

func (c execCmd) Run(g *globals) error {
	res, err := agentCall(g, 10*time.Minute, func(ctx context.Context, a *api.Client) (api.ExecResult, error) {
		return a.ExecService(ctx, c.Service, api.ExecRequest{Cmd: c.Cmd, Container: c.Container})
	})
	if err != nil {
		return err
	}
	os.Stdout.WriteString(res.Stdout)
	os.Stderr.WriteString(res.Stderr)
	if res.ExitCode != 0 {
		fmt.Fprintf(os.Stderr, "uncloud: %s in %s@%s exited with %d\n", strings.Join(c.Cmd, " "), res.Container, res.Machine, res.ExitCode)
		os.Exit(res.ExitCode)
	}
	return nil
}
