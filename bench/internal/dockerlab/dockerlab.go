// Package dockerlab is the network the container benchmarks measure: lab
// machines (network namespaces), each with its own Docker Engine holding
// the test image, formed into one uncloud network with every machine
// alive and its Docker network made.
package dockerlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// Lab is n machines m1…mn with their engines, formed.
type Lab struct {
	Lab     *lab.Lab
	Hosts   []*lab.Host
	Dockers []*lab.Docker
	// Agents are the uncloud agents, by machine.
	Agents []*lab.Process
	// Dir is a temporary directory for the benchmark's files, removed by
	// Close.
	Dir string
}

// Start builds uncloud and the test image, starts n machines with their
// engines (the image loaded in each) and forms the network, saying what
// it does on log. Run from the repository root, as root.
func Start(ctx context.Context, n int, log io.Writer) (_ *Lab, err error) {
	dir, err := os.MkdirTemp("", "uncloud-bench")
	if err != nil {
		return nil, err
	}
	l := &Lab{Dir: dir}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	fmt.Fprintln(log, "building uncloud and the test image…")
	bin := filepath.Join(dir, "uncloud")
	build := exec.Command("go", "build", "-o", bin, "./cmd/uncloud")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build uncloud: %w: %s", err, out)
	}
	echo, err := testimage.BuildBinary(ctx, dir)
	if err != nil {
		return nil, err
	}
	tarball, err := testimage.Tarball(echo)
	if err != nil {
		return nil, err
	}
	if l.Lab, err = lab.New(ctx, lab.Options{Uncloud: bin}); err != nil {
		return nil, err
	}
	if l.Hosts, err = l.Lab.AddHosts(ctx, n); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "starting %d Docker Engines…\n", n)
	l.Dockers = make([]*lab.Docker, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Dockers[i], errs[i] = h.StartDocker(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if err := l.loadTestImage(ctx, tarball); err != nil {
		return nil, err
	}
	fmt.Fprintln(log, "forming the network…")
	return l, l.form(ctx)
}

// loadTestImage imports the test image into the first engine and copies
// that very image into the others. Importing into each engine would give
// each its own image ID (docker import stamps the time of the import),
// and a service pinned to the local image ID of one machine is refused
// by a machine whose image under the name is another.
func (l *Lab) loadTestImage(ctx context.Context, tarball []byte) error {
	first := l.Dockers[0].Client
	if err := testimage.Import(ctx, first, tarball, testimage.Tag); err != nil {
		return err
	}
	for _, d := range l.Dockers[1:] {
		rc, err := first.ImageSave(ctx, []string{testimage.Tag})
		if err != nil {
			return fmt.Errorf("save the test image: %w", err)
		}
		resp, err := d.Client.ImageLoad(ctx, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("load the test image: %w", err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("load the test image: %w", err)
		}
	}
	return nil
}

// Close stops the engines and the lab and removes Dir.
func (l *Lab) Close() {
	for _, d := range l.Dockers {
		if d != nil {
			d.Close()
		}
	}
	if l.Lab != nil {
		l.Lab.Close()
	}
	os.RemoveAll(l.Dir)
}

// StopAgents stops every uncloud agent (their containers stay), freeing
// the ports they hold.
func (l *Lab) StopAgents() {
	for _, p := range l.Agents {
		_ = p.Stop(10 * time.Second)
	}
}

// Uncloud runs the CLI on machine i.
func (l *Lab) Uncloud(ctx context.Context, i int, args ...string) (string, error) {
	return l.Hosts[i].Run(ctx, l.Lab.Uncloud, args...)
}

// Client is the local API of machine i, on its socket.
func (l *Lab) Client(i int) (*api.Client, error) {
	return api.NewClient(filepath.Join(l.Hosts[i].Dir, "run", "uncloud.sock"), api.SSHOptions{})
}

// form inits the first machine, joins the others, and waits until every
// machine's agent has made its Docker network and sees the others alive.
func (l *Lab) form(ctx context.Context) error {
	var err error
	l.Agents, err = Form(ctx, l.Lab, l.Hosts, l.Dockers)
	return err
}

// Form runs an agent on each host with its engine: hosts[0] inits the
// network as m1, the others join as m2…; it waits until every agent has
// made its Docker network and sees the others alive, and returns the
// agents (also on error, those started).
func Form(ctx context.Context, l *lab.Lab, hosts []*lab.Host, dockers []*lab.Docker) ([]*lab.Process, error) {
	uncloud := func(ctx context.Context, i int, args ...string) (string, error) {
		return hosts[i].Run(ctx, l.Uncloud, args...)
	}
	var agents []*lab.Process
	for i, h := range hosts {
		args := []string{"DOCKER_HOST=" + dockers[i].DockerHost(), l.Uncloud, "--log-level", "warn"}
		if i == 0 {
			args = append(args, "init", "--name", "m1", "--foreground")
		} else {
			tok, err := uncloud(ctx, 0, "token")
			if err != nil {
				return agents, err
			}
			args = append(args, "join", "--name", fmt.Sprintf("m%d", i+1), "--foreground", strings.TrimSpace(tok))
		}
		p, err := h.Start("uncloud", "env", args...)
		if err != nil {
			return agents, err
		}
		agents = append(agents, p)
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		// The agent logs at warn: wait for its API instead of its "machine up".
		for {
			if _, err := uncloud(wctx, i, "status"); err == nil {
				break
			}
			if wctx.Err() != nil {
				cancel()
				return agents, fmt.Errorf("agent on %s did not come up:\n%s", h.Name, p.Log())
			}
			time.Sleep(300 * time.Millisecond)
		}
		cancel()
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i, d := range dockers {
		for {
			_, err := d.Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return agents, fmt.Errorf("no uncloud network on m%d: %w", i+1, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// Every machine must see every other alive before placement spreads.
	for {
		out, err := uncloud(ctx, 0, "machine", "ls", "-o", "json")
		var ms []api.MachineInfo
		if err == nil && json.Unmarshal([]byte(out), &ms) == nil {
			alive := 0
			for _, m := range ms {
				if m.State == "alive" || m.State == "self" {
					alive++
				}
			}
			if alive == len(hosts) {
				return agents, nil
			}
		}
		if time.Now().After(deadline) {
			return agents, fmt.Errorf("not all machines alive: %s", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
