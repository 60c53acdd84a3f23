package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// Docker is a Docker Engine of one lab host: its own dockerd in the host's
// network namespace (entered with nsenter, which keeps the real /sys and
// its cgroups, unlike ip netns exec), with its own data root, exec root,
// pid file, socket and managed containerd, and its iptables rules in that
// namespace. Containers of two hosts therefore live on two machines and
// can talk only through the network between them.
type Docker struct {
	Host   *Host
	Dir    string // data, exec root, socket, dockerd.log
	Socket string
	Client *client.Client

	cmd  *exec.Cmd
	done chan struct{}
}

// StartDocker starts dockerd in h and waits until it answers.
func (h *Host) StartDocker(ctx context.Context) (*Docker, error) {
	if _, err := exec.LookPath("dockerd"); err != nil {
		return nil, fmt.Errorf("no dockerd on this machine (install docker.io): %w", err)
	}
	dir := filepath.Join(h.Dir, "docker")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// An empty config file: the machine's /etc/docker/daemon.json (data
	// root, storage driver) belongs to the machine's own engine.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	d := &Docker{Host: h, Dir: dir, Socket: filepath.Join(dir, "docker.sock")}
	var err error
	d.Client, err = client.NewClientWithOpts(client.WithHost(d.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, err
	}
	if err := d.Start(ctx); err != nil {
		d.Client.Close()
		return nil, err
	}
	return d, nil
}

// DockerHost is the engine's address for DOCKER_HOST or --docker-host.
func (d *Docker) DockerHost() string { return "unix://" + d.Socket }

// Start starts dockerd (again) and waits until it answers.
func (d *Docker) Start(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(d.Dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.cmd = exec.Command("nsenter", "--net=/run/netns/"+d.Host.NS, "dockerd",
		"--config-file", filepath.Join(d.Dir, "daemon.json"),
		"--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", filepath.Join(d.Dir, "exec"),
		"--pidfile", filepath.Join(d.Dir, "docker.pid"),
		"-H", d.DockerHost(),
		"--bridge=none", "--iptables=true")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start dockerd on %s: %w", d.Host.Name, err)
	}
	d.done = make(chan struct{})
	go func() { d.cmd.Wait(); logf.Close(); close(d.done) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := d.Client.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(d.Dir, "dockerd.log"))
			if len(log) > 2000 {
				log = log[len(log)-2000:]
			}
			return fmt.Errorf("dockerd on %s not ready: %w\n%s", d.Host.Name, err, log)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Stop ends dockerd like a service manager would: SIGTERM (Docker stops
// its containers), SIGKILL after 45 s.
func (d *Docker) Stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(45 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// Close removes every container, stops dockerd and deletes its data.
func (d *Docker) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if list, err := d.Client.ContainerList(ctx, container.ListOptions{All: true}); err == nil {
		// A few at a time: hundreds of containers (the benchmarks) take
		// minutes one by one.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, c := range list {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				d.Client.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}()
		}
		wg.Wait()
	}
	d.Client.Close()
	d.Stop()
	os.RemoveAll(filepath.Join(d.Dir, "data"))
}
