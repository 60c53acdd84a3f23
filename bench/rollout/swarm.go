package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// The peer: Docker Swarm on the same three engines, the same service (same
// image, health check and timings, start-first, one at a time, monitor
// 2 s, failure action rollback), published on port 8081 through Swarm's
// routing mesh, the same client.

const swarmPort = 8081

func swarmSpec(v string, replicas uint64, failIn string) swarm.ServiceSpec {
	health := []string{"CMD", "/echoserver", "get", "http://127.0.0.1:8080/"}
	if failIn != "" {
		health = []string{"CMD", "/echoserver", "get-unless-in", failIn, "http://127.0.0.1:8080/"}
	}
	update := &swarm.UpdateConfig{Parallelism: 1, Order: swarm.UpdateOrderStartFirst, Monitor: 2 * time.Second,
		FailureAction: swarm.UpdateFailureActionRollback}
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "web"},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: testimage.Tag, Env: []string{"VERSION=" + v},
			Healthcheck: &container.HealthConfig{Test: health, Interval: time.Second, Timeout: time.Second, Retries: 2}}},
		Mode:           swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig:   update,
		RollbackConfig: &swarm.UpdateConfig{Parallelism: 1, Order: swarm.UpdateOrderStartFirst, Monitor: 2 * time.Second},
		EndpointSpec: &swarm.EndpointSpec{Ports: []swarm.PortConfig{{Protocol: swarm.PortConfigProtocolTCP, TargetPort: 8080,
			PublishedPort: swarmPort, PublishMode: swarm.PortConfigPublishModeIngress}}},
	}
}

// formSwarm makes the engines one swarm, the first the manager. Swarm's
// gossip port is 7946, uncloud's too: the uncloud agents are stopped and
// their containers removed first.
func (b *bench) formSwarm(ctx context.Context) error {
	b.StopAgents()
	for _, d := range b.Dockers {
		list, err := d.Client.ContainerList(ctx, container.ListOptions{All: true})
		if err != nil {
			return err
		}
		for _, c := range list {
			if err := d.Client.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
				return err
			}
		}
	}
	mgr := b.Dockers[0].Client
	addr := b.Hosts[0].Addr.String()
	if _, err := mgr.SwarmInit(ctx, swarm.InitRequest{ListenAddr: "0.0.0.0:2377", AdvertiseAddr: addr}); err != nil {
		return fmt.Errorf("swarm init: %w", err)
	}
	sw, err := mgr.SwarmInspect(ctx)
	if err != nil {
		return err
	}
	for i, d := range b.Dockers[1:] {
		if err := d.Client.SwarmJoin(ctx, swarm.JoinRequest{ListenAddr: "0.0.0.0:2377", AdvertiseAddr: b.Hosts[i+1].Addr.String(),
			RemoteAddrs: []string{addr + ":2377"}, JoinToken: sw.JoinTokens.Worker}); err != nil {
			return fmt.Errorf("swarm join on %s: %w", b.Hosts[i+1].Name, err)
		}
	}
	return nil
}

// swarmRunning waits until the service has n running, healthy tasks of
// version v (the spec's current version) and no update in progress.
func swarmRunning(ctx context.Context, c *client.Client, id string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		tasks, err := c.TaskList(ctx, swarm.TaskListOptions{})
		running := 0
		for _, t := range tasks {
			if t.ServiceID == id && t.Status.State == swarm.TaskStateRunning && t.DesiredState == swarm.TaskStateRunning {
				running++
			}
		}
		if err == nil && running == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("swarm service has %d of %d running tasks after %v (%v)", running, n, timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// swarmUpdate changes the service to spec and waits for the update to end:
// completed, or rolled back (then rollback is from its start to its end).
func swarmUpdate(ctx context.Context, c *client.Client, id string, spec swarm.ServiceSpec) (took, rollback time.Duration, state string, err error) {
	svc, _, err := c.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
	if err != nil {
		return 0, 0, "", err
	}
	start := time.Now()
	if _, err := c.ServiceUpdate(ctx, id, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
		return 0, 0, "", fmt.Errorf("swarm service update: %w", err)
	}
	var rbStart time.Time
	deadline := start.Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		svc, _, err := c.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
		if err != nil || svc.UpdateStatus == nil {
			continue
		}
		switch svc.UpdateStatus.State {
		case swarm.UpdateStateRollbackStarted:
			if rbStart.IsZero() {
				rbStart = time.Now()
			}
		case swarm.UpdateStateCompleted, swarm.UpdateStateRollbackCompleted, swarm.UpdateStatePaused, swarm.UpdateStateRollbackPaused:
			end := time.Now()
			if !rbStart.IsZero() {
				rollback = end.Sub(rbStart)
			}
			return end.Sub(start), rollback, string(svc.UpdateStatus.State), nil
		}
	}
	return 0, 0, "", fmt.Errorf("swarm update did not end in 10 minutes")
}

// measureSwarm runs the same phases on Swarm.
func (b *bench) measureSwarm(ctx context.Context, replicas int) ([]phase, error) {
	if err := b.formSwarm(ctx); err != nil {
		return nil, err
	}
	c := b.Dockers[0].Client
	created, err := c.ServiceCreate(ctx, swarmSpec("1", uint64(replicas), ""), swarm.ServiceCreateOptions{QueryRegistry: false})
	if err != nil {
		return nil, fmt.Errorf("swarm service create: %w", err)
	}
	id := created.ID
	if err := swarmRunning(ctx, c, id, replicas, 3*time.Minute); err != nil {
		return nil, err
	}
	// The routing mesh needs IPVS (ip_vs) in the kernel; without it the
	// times are still measured, the requests are not.
	pc, err := b.startProbe(ctx, "probe-swarm", fmt.Sprintf("http://%s:%d/", b.Hosts[0].Addr, swarmPort), "app.test")
	noMesh := ""
	if err != nil {
		fmt.Fprintf(b.log, "swarm: the routing mesh does not answer (%v); timing without the client\n%s\n", err, b.swarmDiagnosis(ctx))
		noMesh = "requests not measured: no routing mesh (no ip_vs in this kernel)"
	}
	var out []phase
	for _, step := range []struct {
		what, v, failIn string
		wantState       string
	}{
		{fmt.Sprintf("rolling update, %d replicas", replicas), "2", "", string(swarm.UpdateStateCompleted)},
		{"failure at the 1st replacement, rollback", "3", "0.0.0.0/0", string(swarm.UpdateStateRollbackCompleted)},
	} {
		fmt.Fprintf(b.log, "swarm: %s…\n", step.what)
		ok0, f0 := pc.now()
		if noMesh != "" {
			ok0, f0 = 0, 0
		}
		took, rb, state, err := swarmUpdate(ctx, c, id, swarmSpec(step.v, uint64(replicas), step.failIn))
		if err != nil {
			return nil, err
		}
		if err := swarmRunning(ctx, c, id, replicas, 2*time.Minute); err != nil {
			return nil, err
		}
		time.Sleep(time.Second)
		p := phase{peer: "swarm", what: step.what, took: took, rollback: rb, answered: -1, failed: -1, note: noMesh}
		if noMesh == "" {
			ok1, f1 := pc.now()
			p.answered, p.failed = ok1-ok0, f1-f0
		}
		if state != step.wantState {
			p.note = strings.TrimPrefix(p.note+"; ended "+state, "; ")
		}
		out = append(out, p)
	}
	return out, nil
}

// swarmDiagnosis is what m1 says about the routing mesh, for a run where
// it does not answer.
func (b *bench) swarmDiagnosis(ctx context.Context) string {
	var out []string
	for _, cmd := range [][]string{
		{"iptables", "-w", "-t", "nat", "-S"},
		{"iptables", "-w", "-S", "FORWARD"},
		{"ip", "-br", "addr"},
		{"sh", "-c", "grep -i -E 'ingress|error|warn' " + b.Dockers[0].Dir + "/dockerd.log | tail -25"},
	} {
		s, err := b.Hosts[0].Run(ctx, cmd[0], cmd[1:]...)
		out = append(out, fmt.Sprintf("$ %s (%v)\n%s", strings.Join(cmd, " "), err, s))
	}
	return strings.Join(out, "\n")
}
