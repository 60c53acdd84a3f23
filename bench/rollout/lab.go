package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// counter reads a probe's running totals.
type counter struct{ p *lab.Process }

// now is the probe's last "count OK FAILED" line.
func (c counter) now() (ok, failed int) {
	lines := strings.Split(strings.TrimSpace(c.p.Output()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if n, _ := fmt.Sscanf(lines[i], "count %d %d", &ok, &failed); n == 2 {
			return ok, failed
		}
	}
	return 0, 0
}

// waitOK waits until the probe has n more answers than at start.
func (c counter) waitOK(ctx context.Context, n int, timeout time.Duration) error {
	start, _ := c.now()
	deadline := time.Now().Add(timeout)
	for {
		if ok, _ := c.now(); ok-start >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("probe got fewer than %d answers in %v:\n%s", n, timeout, tail(c.p.Output(), 600))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// form inits the first machine, joins the others, and waits until every
// machine's agent has made its Docker network and sees the others alive
// (as bench/containers does).
func (b *bench) form(ctx context.Context) error {
	for i, h := range b.hosts {
		args := []string{"DOCKER_HOST=" + b.dockers[i].DockerHost(), b.lab.Uncloud, "--log-level", "warn"}
		if i == 0 {
			args = append(args, "init", "--name", "m1", "--foreground")
		} else {
			tok, err := b.uncloud(ctx, 0, "token")
			if err != nil {
				return err
			}
			args = append(args, "join", "--name", fmt.Sprintf("m%d", i+1), "--foreground", strings.TrimSpace(tok))
		}
		p, err := h.Start("uncloud", "env", args...)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		for {
			if _, err := b.uncloud(wctx, i, "status"); err == nil {
				break
			}
			if wctx.Err() != nil {
				cancel()
				return fmt.Errorf("agent on %s did not come up:\n%s", h.Name, p.Log())
			}
			time.Sleep(300 * time.Millisecond)
		}
		cancel()
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i, d := range b.dockers {
		for {
			if _, err := d.Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{}); err == nil {
				break
			} else if time.Now().After(deadline) {
				return fmt.Errorf("no uncloud network on m%d: %w", i+1, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	for {
		out, err := b.uncloud(ctx, 0, "machine", "ls", "-o", "json")
		var ms []api.MachineInfo
		if err == nil && json.Unmarshal([]byte(out), &ms) == nil {
			alive := 0
			for _, m := range ms {
				if m.State == "alive" || m.State == "self" {
					alive++
				}
			}
			if alive == len(b.hosts) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not all machines alive: %s", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
