package runtime

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/uncloud-mesh/uncloud/record"
)

// Create makes and starts a container from spec on the uncloud network,
// with the machine's resolver as its DNS, and returns what it is now.
func (r *Runtime) Create(ctx context.Context, spec ContainerSpec) (*Container, error) {
	return r.CreateWith(ctx, spec, Opened{})
}

// CreateWith is Create for a spec with sealed values: opened holds them
// in clear, for Docker only (environment, and files bind-mounted from
// SecretsDir); the label keeps the spec's public form.
func (r *Runtime) CreateWith(ctx context.Context, spec ContainerSpec, opened Opened) (_ *Container, err error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	restart, _ := ParseRestart(spec.Restart)
	if spec.Name == "" {
		spec.Name = record.ContainerPrefix(spec.Service) + "-" + randomSuffix()
	}
	if _, err := r.docker.ImageInspect(ctx, spec.RunImage()); err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %q is not in Docker on %s (push it with 'uncloud image push %s -m %s', or docker pull/load it there)",
				ErrImageNotFound, spec.RunImage(), r.cfg.MachineName, spec.Image, r.cfg.MachineName)
		}
		return nil, fmt.Errorf("%w: inspect image %q: %w", ErrUnavailable, spec.RunImage(), err)
	}
	specJSON, err := json.Marshal(spec.Public())
	if err != nil {
		return nil, err
	}
	env := spec.Env
	if len(spec.EnvSealed) > 0 {
		env = opened.Env
	}
	files, err := r.writeFiles(spec.Name, spec.Files, opened)
	if err != nil {
		if !errors.Is(err, ErrNameTaken) {
			r.removeFiles(spec.Name)
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			r.removeFiles(spec.Name)
		}
	}()
	cfg := &container.Config{
		Image:    spec.RunImage(),
		Env:      env,
		Hostname: spec.Name,
		Labels: map[string]string{
			LabelService: spec.Service,
			LabelMachine: r.cfg.MachineID,
			LabelSpec:    string(specJSON),
		},
	}
	if len(spec.Cmd) > 0 {
		cfg.Cmd = spec.Cmd
	}
	exposed, bindings := spec.dockerPorts()
	if len(exposed) > 0 {
		cfg.ExposedPorts = exposed
	}
	if test := spec.HealthTest(); test != nil {
		interval, timeout, retries, start := spec.HealthTimings()
		cfg.Healthcheck = &container.HealthConfig{Test: test,
			Interval: interval, Timeout: timeout, Retries: retries, StartPeriod: start}
	}
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode(r.cfg.Network),
		DNS:         []string{r.gateway.String()},
		DNSSearch:   []string{"internal"},
		// Docker's embedded DNS writes ndots:0 unless told otherwise, so
		// a bare name (db, as Compose files call their services) went
		// out first as "db.", through the machine's resolver to its
		// upstreams (a leak, and 4 s where they do not answer), before
		// db.internal; with ndots:1 it is db.internal first.
		DNSOptions:    []string{"ndots:1"},
		RestartPolicy: restart,
		PortBindings:  bindings,
	}
	host.Binds, host.Mounts = spec.dockerVolumes()
	spec.applyOptions(cfg, host)
	host.Mounts = append(host.Mounts, files...)
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{r.cfg.Network: {}}}
	created, err := r.docker.ContainerCreate(ctx, cfg, host, netCfg, nil, spec.Name)
	if err != nil {
		if errdefs.IsConflict(err) {
			return nil, fmt.Errorf("%w: container name %q is already used on %s", ErrNameTaken, spec.Name, r.cfg.MachineName)
		}
		return nil, fmt.Errorf("create container %q on %s: %w", spec.Name, r.cfg.MachineName, err)
	}
	if err := r.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		_ = r.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
		if len(bindings) > 0 && (strings.Contains(err.Error(), "already allocated") || strings.Contains(err.Error(), "address already in use")) {
			return nil, fmt.Errorf("%w on %s: start container %q: %w", ErrPortTaken, r.cfg.MachineName, spec.Name, err)
		}
		return nil, fmt.Errorf("start container %q on %s: %w", spec.Name, r.cfg.MachineName, err)
	}
	return r.Inspect(ctx, created.ID)
}

func randomSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Inspect describes one of this machine's uncloud containers.
func (r *Runtime) Inspect(ctx context.Context, idOrName string) (*Container, error) {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	return r.describe(c), nil
}

// InspectRaw is Docker's own description of the container.
func (r *Runtime) InspectRaw(ctx context.Context, idOrName string) (container.InspectResponse, error) {
	return r.inspect(ctx, idOrName)
}

func (r *Runtime) inspect(ctx context.Context, idOrName string) (container.InspectResponse, error) {
	c, err := r.docker.ContainerInspect(ctx, idOrName)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return c, fmt.Errorf("%w %q on %s", ErrNotFound, idOrName, r.cfg.MachineName)
		}
		return c, fmt.Errorf("%w: inspect %q: %w", ErrUnavailable, idOrName, err)
	}
	if c.Config == nil || c.Config.Labels[LabelMachine] != r.cfg.MachineID {
		return c, fmt.Errorf("%w %q on %s (a container not run by uncloud)", ErrNotFound, idOrName, r.cfg.MachineName)
	}
	return c, nil
}

// describe is what the runtime reports of an inspected container.
func (r *Runtime) describe(c container.InspectResponse) *Container {
	rec := &Container{
		ID:      c.ID,
		Name:    strings.TrimPrefix(c.Name, "/"),
		Service: c.Config.Labels[LabelService],
		Image:   c.Config.Image,
	}
	if c.State != nil {
		rec.State = c.State.Status
		if c.State.Health != nil {
			rec.Health = c.State.Health.Status
		}
	}
	if c.NetworkSettings != nil {
		if ep := c.NetworkSettings.Networks[r.cfg.Network]; ep != nil {
			rec.Address = ep.IPAddress
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, c.Created); err == nil {
		rec.Created = t.UTC()
	}
	var spec ContainerSpec
	if json.Unmarshal([]byte(c.Config.Labels[LabelSpec]), &spec) == nil {
		rec.Ports, _ = spec.PortList()
		// The name the user gave, and the digest it runs as.
		rec.Image, rec.ImageDigest = spec.Image, spec.PinDigest()
	}
	return rec
}

// Spec is the spec a container was made from.
func (r *Runtime) Spec(ctx context.Context, idOrName string) (ContainerSpec, error) {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return ContainerSpec{}, err
	}
	var spec ContainerSpec
	if err := json.Unmarshal([]byte(c.Config.Labels[LabelSpec]), &spec); err != nil {
		return spec, fmt.Errorf("container %q has no readable uncloud spec: %w", idOrName, err)
	}
	return spec, nil
}

// List describes all of this machine's uncloud containers.
func (r *Runtime) List(ctx context.Context) ([]*Container, error) {
	summaries, err := r.docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelMachine+"="+r.cfg.MachineID))})
	if err != nil {
		return nil, fmt.Errorf("%w: list containers: %w", ErrUnavailable, err)
	}
	out := make([]*Container, 0, len(summaries))
	for _, s := range summaries {
		c, err := r.docker.ContainerInspect(ctx, s.ID)
		if errdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("%w: inspect %s: %w", ErrUnavailable, s.ID, err)
		}
		out = append(out, r.describe(c))
	}
	return out, nil
}

// Start starts a stopped container.
func (r *Runtime) Start(ctx context.Context, idOrName string) error {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return err
	}
	if err := r.docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start %q on %s: %w", idOrName, r.cfg.MachineName, err)
	}
	return nil
}

// Stop stops a container, giving it timeout to exit before SIGKILL.
func (r *Runtime) Stop(ctx context.Context, idOrName string, timeout time.Duration) error {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return err
	}
	secs := int(timeout / time.Second)
	opts := container.StopOptions{Timeout: &secs}
	if c.Config.StopTimeout != nil {
		opts.Timeout = nil // the container's stop_grace_period
	}
	if err := r.docker.ContainerStop(ctx, c.ID, opts); err != nil {
		return fmt.Errorf("stop %q on %s: %w", idOrName, r.cfg.MachineName, err)
	}
	return nil
}

// Remove stops and removes a container (its named volumes stay).
func (r *Runtime) Remove(ctx context.Context, idOrName string) error {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return err
	}
	if c.Config.StopTimeout != nil || c.Config.StopSignal != "" {
		// Its stop signal and grace period are asked for: stop it as
		// Docker would before removing (a forced removal kills at once).
		if err := r.docker.ContainerStop(ctx, c.ID, container.StopOptions{}); err != nil && !errdefs.IsNotFound(err) {
			r.log.Warn("graceful stop before removal failed; removing anyway", "container", idOrName, "err", err)
		}
	}
	if err := r.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove %q on %s: %w", idOrName, r.cfg.MachineName, err)
	}
	r.removeFiles(strings.TrimPrefix(c.Name, "/"))
	return nil
}

// LogOptions select log lines.
type LogOptions struct {
	Follow bool
	Since  string // RFC 3339 time or a Go duration like 10m (Docker's syntax)
	Tail   string // number of lines from the end, or "all"
	Until  string // RFC 3339 time or a Go duration: lines before it only
}

// Logs calls line for every log line (stdout and stderr, each prefixed
// with Docker's RFC 3339 timestamp and a space) until the log ends, or,
// with Follow, until ctx ends.
func (r *Runtime) Logs(ctx context.Context, idOrName string, o LogOptions, line func(string) error) error {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return err
	}
	rc, err := r.docker.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true,
		Follow: o.Follow, Since: o.Since, Until: o.Until, Tail: o.Tail, Timestamps: true})
	if err != nil {
		return fmt.Errorf("logs of %q on %s: %w", idOrName, r.cfg.MachineName, err)
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() {
		var err error
		if c.Config.Tty {
			_, err = io.Copy(pw, rc)
		} else {
			_, err = stdcopy.StdCopy(pw, pw, rc)
		}
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := line(sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("read logs of %q: %w", idOrName, err)
	}
	return nil
}

// ExecResult is the outcome of a command run in a container.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// Exec runs cmd in a running container and collects its output (capped at
// 4 MiB per stream).
func (r *Runtime) Exec(ctx context.Context, idOrName string, cmd []string) (ExecResult, error) {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return ExecResult{}, err
	}
	if len(cmd) == 0 {
		return ExecResult{}, fmt.Errorf("%w: exec needs a command", ErrBadSpec)
	}
	ex, err := r.docker.ContainerExecCreate(ctx, c.ID, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return ExecResult{}, fmt.Errorf("exec %q in %q on %s: %w", strings.Join(cmd, " "), idOrName, r.cfg.MachineName, err)
	}
	att, err := r.docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return ExecResult{}, fmt.Errorf("attach to exec in %q: %w", idOrName, err)
	}
	defer att.Close()
	var stdout, stderr capped
	stdout.max, stderr.max = 4<<20, 4<<20
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		return ExecResult{}, fmt.Errorf("read exec output in %q: %w", idOrName, err)
	}
	insp, err := r.docker.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return ExecResult{}, fmt.Errorf("exec result in %q: %w", idOrName, err)
	}
	return ExecResult{ExitCode: insp.ExitCode, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

type capped struct {
	b   []byte
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) String() string { return string(c.b) }
