package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/uncloud-mesh/uncloud/api"
)

// upTimeout bounds one peer's way from command to all up.
const upTimeout = 5 * time.Minute

// up reports whether the containers of each service (name → states) make
// the whole project up: every replica present and running, and healthy
// where the service has a health check. why says what is missing.
func up(byService map[string][]state) (ok bool, why string) {
	for _, s := range services {
		cs := byService[s.name]
		if len(cs) != s.replicas {
			return false, fmt.Sprintf("%s has %d of %d containers", s.name, len(cs), s.replicas)
		}
		for _, c := range cs {
			if c.state != "running" || (s.health && c.health != "healthy") {
				return false, fmt.Sprintf("%s: a container is %s/%s", s.name, c.state, c.health)
			}
		}
	}
	return true, ""
}

type state struct{ state, health string }

// composeUp times `docker-compose up -d` of file against m1's engine until
// every container is up (docker inspect, polled every 100 ms), then takes
// the project down again.
func (b *bench) composeUp(ctx context.Context, file string) (cmd, all time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	compose := func(args ...string) ([]byte, error) {
		c := exec.CommandContext(ctx, b.composeBin[0], append(append(b.composeBin[1:], "-f", file, "-p", "bench"), args...)...)
		c.Env = append(os.Environ(), "DOCKER_HOST="+b.Dockers[0].DockerHost())
		return c.CombinedOutput()
	}
	defer func() {
		if out, derr := compose("down", "--timeout", "2"); derr != nil && err == nil {
			err = fmt.Errorf("docker-compose down: %w: %s", derr, out)
		}
	}()
	start := time.Now()
	if out, err := compose("up", "-d"); err != nil {
		return 0, 0, fmt.Errorf("docker-compose up -d: %w: %s", err, out)
	}
	cmd = time.Since(start)
	d := b.Dockers[0].Client
	for {
		list, lerr := d.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project=bench"))})
		byService := map[string][]state{}
		for _, c := range list {
			st := state{state: c.State}
			if ci, ierr := d.ContainerInspect(ctx, c.ID); ierr == nil && ci.State != nil && ci.State.Health != nil {
				st.health = ci.State.Health.Status
			}
			svc := c.Labels["com.docker.compose.service"]
			byService[svc] = append(byService[svc], st)
		}
		ok, why := up(byService)
		if lerr == nil && ok {
			return cmd, time.Since(start), nil
		}
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("docker-compose project not up within %v: %s (%v)", upTimeout, why, lerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// uncloudDeploy times `uncloud deploy -f file` on m1 until every container
// of the project is up across the machines (the agent's container list,
// what `uncloud ps -o json` shows, polled every 100 ms on m1's socket),
// then removes the services and waits until their containers are gone.
func (b *bench) uncloudDeploy(ctx context.Context, c *api.Client, file string) (cmd, all time.Duration, spread map[string]int, err error) {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	defer func() {
		if rerr := b.uncloudRemove(ctx, c); rerr != nil && err == nil {
			err = rerr
		}
	}()
	start := time.Now()
	if out, err := b.Uncloud(ctx, 0, "deploy", "-f", file, "-p", "bench"); err != nil {
		return 0, 0, nil, fmt.Errorf("uncloud deploy: %w\n%s", err, out)
	}
	cmd = time.Since(start)
	for {
		cs, lerr := c.Containers(ctx)
		byService := map[string][]state{}
		spread = map[string]int{}
		for _, ci := range cs {
			name := strings.TrimSuffix(ci.Service, ".bench") // the project's services are <name>.bench
			byService[name] = append(byService[name], state{ci.State, ci.Health})
			spread[ci.Machine]++
		}
		ok, why := up(byService)
		if lerr == nil && ok {
			return cmd, time.Since(start), spread, nil
		}
		if ctx.Err() != nil {
			return 0, 0, nil, fmt.Errorf("uncloud project not up within %v: %s (%v)", upTimeout, why, lerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// uncloudRemove removes every service of the project and waits until no
// container of theirs is listed.
func (b *bench) uncloudRemove(ctx context.Context, c *api.Client) error {
	if out, err := b.Uncloud(ctx, 0, "rm", "--project", "bench"); err != nil && !strings.Contains(out, "no services") {
		return fmt.Errorf("uncloud rm --project bench: %v: %s", err, strings.TrimSpace(out))
	}
	for deadline := time.Now().Add(time.Minute); ; {
		cs, err := c.Containers(ctx)
		if err == nil && len(cs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d containers left a minute after uncloud rm (%v)", len(cs), err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
