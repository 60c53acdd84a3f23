package runtime

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"

	"github.com/uncloud-mesh/uncloud/record"
)

// Errors of the runtime; the agent maps them to API answers.
var (
	ErrBadSpec       = errors.New("bad container spec")
	ErrNotFound      = errors.New("no such container")
	ErrImageNotFound = errors.New("image not found")
	ErrNameTaken     = errors.New("name taken")
	ErrPortTaken     = errors.New("a published host port is taken")
)

// ContainerSpec is what a container of a service is made from. It travels
// from the machine that ran the command to the machine that runs the
// container, and is kept in the container's LabelSpec label.
type ContainerSpec struct {
	Service string `json:"service"`
	Name    string `json:"name,omitempty"` // the container's name; default <service>-<random>
	Image   string `json:"image"`
	// ImagePin is the exact image to run, which Image resolved to when
	// the service was run or deployed: name@sha256:… (a registry's
	// manifest digest) or sha256:… (a local image ID). Empty: Image as
	// Docker finds it (specs made before pins existed).
	ImagePin string   `json:"image_pin,omitempty"`
	Cmd      []string `json:"cmd,omitempty"`
	Env      []string `json:"env,omitempty"`     // K=V
	Volumes  []string `json:"volumes,omitempty"` // VOLUME:/path[:ro] or /host/path:/path[:ro]
	Ports    []string `json:"ports,omitempty"`   // record.PortSpec text: SRV, Docker-published or ingress
	Restart  string   `json:"restart,omitempty"` // no, always, unless-stopped, on-failure[:N]
	// Health, when set, is Docker's health check test: ["CMD", arg…] (run
	// inside the container, no shell), ["CMD-SHELL", "command"], or just
	// the arguments (CMD form). Checked every HealthInterval (default
	// 2 s); HealthRetries failures in a row (default 3) make the container
	// unhealthy.
	Health []string `json:"health,omitempty"`

	// The basic container keys, with Docker's meaning (see options.go).
	Entrypoint      []string          `json:"entrypoint,omitempty"`
	User            string            `json:"user,omitempty"`
	WorkingDir      string            `json:"working_dir,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"` // never uncloud.*
	Init            bool              `json:"init,omitempty"`
	CapAdd          []string          `json:"cap_add,omitempty"`
	CapDrop         []string          `json:"cap_drop,omitempty"`
	StopSignal      string            `json:"stop_signal,omitempty"`
	StopGracePeriod string            `json:"stop_grace_period,omitempty"` // Go duration, e.g. 30s
	Ulimits         []string          `json:"ulimits,omitempty"`           // NAME=SOFT[:HARD]
	LogDriver       string            `json:"log_driver,omitempty"`
	LogOptions      map[string]string `json:"log_options,omitempty"`
	// Tmpfs are in-memory mounts: /path[:OPTIONS] (Docker's --tmpfs).
	Tmpfs []string `json:"tmpfs,omitempty"`

	// Resources: limits Docker enforces (CPUs as NanoCPUs, Memory in
	// bytes), reservations placement counts (and Docker's memory soft
	// limit). Zero: none.
	CPUs          float64 `json:"cpus,omitempty"`
	Memory        int64   `json:"memory,omitempty"`
	ReserveCPUs   float64 `json:"reserve_cpus,omitempty"`
	ReserveMemory int64   `json:"reserve_memory,omitempty"`

	// Placement constraints (node.hostname==m1, node.labels.disk!=hdd…):
	// the runtime ignores them; they travel in the spec so that any
	// machine scaling or deploying the service places as it was asked.
	Placement []string `json:"placement,omitempty"`
	// The health check's timings, Compose's healthcheck keys; zero is the
	// default. A failure within HealthStartPeriod does not count (the
	// container is still starting).
	HealthInterval    time.Duration `json:"health_interval,omitempty"`
	HealthTimeout     time.Duration `json:"health_timeout,omitempty"`
	HealthRetries     int           `json:"health_retries,omitempty"`
	HealthStartPeriod time.Duration `json:"health_start_period,omitempty"`

	// Sealed values (runtime/secrets.go). Env above holds plain K=V only
	// on the way in; the machine that runs the command seals the values
	// into EnvSealed and keeps just the names in EnvNames, and the target
	// opens them when it creates the container. EnvVersion names the
	// values (new values, new version; a re-wrap keeps it), so specs
	// compare by Public form. Files are secrets and configs mounted as
	// files, by name and content version.
	EnvNames   []string  `json:"env_names,omitempty"`
	EnvVersion string    `json:"env_version,omitempty"`
	EnvSealed  []byte    `json:"env_sealed,omitempty"`
	Files      []FileRef `json:"files,omitempty"`
}

// The health check's defaults, as uncloud always ran it.
const (
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthRetries  = 3
)

// HealthTimings are the health check's interval, timeout, retries and
// start period, the defaults filled in.
func (s ContainerSpec) HealthTimings() (interval, timeout time.Duration, retries int, start time.Duration) {
	interval, timeout, retries = s.HealthInterval, s.HealthTimeout, s.HealthRetries
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	if retries <= 0 {
		retries = DefaultHealthRetries
	}
	return interval, timeout, retries, max(s.HealthStartPeriod, 0)
}

// nameLabel is a container name: it becomes
// <name>.<machine>.machine.internal, so it is a DNS label, with '_' inside
// as a Compose service's name (plausible_db) gives it; it starts and ends
// with a letter or digit, so it is never taken for an SRV _port label.
var nameLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// CheckName accepts container names (see nameLabel).
func CheckName(what, name string) error {
	if !nameLabel.MatchString(name) {
		return fmt.Errorf("%w: %s %q must be a DNS label: 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit",
			ErrBadSpec, what, name)
	}
	return nil
}

// Validate checks every field and says which one is wrong with which input.
func (s ContainerSpec) Validate() error {
	if err := record.CheckServiceID(s.Service); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSpec, err)
	}
	if s.Name != "" {
		if err := CheckName("container name", s.Name); err != nil {
			return err
		}
	}
	if strings.TrimSpace(s.Image) == "" || strings.ContainsAny(s.Image, " \t\n") {
		return fmt.Errorf("%w: image %q", ErrBadSpec, s.Image)
	}
	if strings.ContainsAny(s.ImagePin, " \t\n") {
		return fmt.Errorf("%w: image pin %q", ErrBadSpec, s.ImagePin)
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			return fmt.Errorf("%w: environment %q is not KEY=VALUE", ErrBadSpec, e)
		}
	}
	if err := s.validateSealed(); err != nil {
		return err
	}
	for _, v := range s.Volumes {
		if _, err := ParseVolume(v); err != nil {
			return err
		}
	}
	if _, err := s.PortList(); err != nil {
		return err
	}
	if err := s.checkBindings(); err != nil {
		return err
	}
	if _, err := ParseRestart(s.Restart); err != nil {
		return err
	}
	if err := s.validateOptions(); err != nil {
		return err
	}
	if t := s.HealthTest(); len(t) == 1 || (len(t) > 0 && t[0] == "CMD-SHELL" && len(t) != 2) {
		return fmt.Errorf("%w: health check %q has no command", ErrBadSpec, s.Health)
	}
	if s.HealthInterval < 0 || s.HealthTimeout < 0 || s.HealthRetries < 0 || s.HealthStartPeriod < 0 {
		return fmt.Errorf("%w: health check timings (interval %v, timeout %v, retries %d, start period %v) must not be negative",
			ErrBadSpec, s.HealthInterval, s.HealthTimeout, s.HealthRetries, s.HealthStartPeriod)
	}
	// Docker refuses an interval or timeout under 1 ms, and so does the
	// spec, before anything is created.
	for _, d := range []time.Duration{s.HealthInterval, s.HealthTimeout, s.HealthStartPeriod} {
		if d > 0 && d < time.Millisecond {
			return fmt.Errorf("%w: health check timing %v is under Docker's minimum of 1ms", ErrBadSpec, d)
		}
	}
	return nil
}

// RunImage is what Docker makes the container from: the pin when there
// is one.
func (s ContainerSpec) RunImage() string {
	if s.ImagePin != "" {
		return s.ImagePin
	}
	return s.Image
}

// PinDigest is the pin's digest: the manifest digest of name@sha256:…,
// the image ID of a local pin, "" without a pin.
func (s ContainerSpec) PinDigest() string {
	if _, d, ok := strings.Cut(s.ImagePin, "@"); ok {
		return d
	}
	return s.ImagePin
}

// HealthTest is Health in Docker's form, or nil.
func (s ContainerSpec) HealthTest() []string {
	if len(s.Health) == 0 {
		return nil
	}
	if s.Health[0] == "CMD" || s.Health[0] == "CMD-SHELL" {
		return s.Health
	}
	return append([]string{"CMD"}, s.Health...)
}

// PortList parses the ports (record.PortSpec text, the one syntax the
// resolver and the ingress read too) into the ports the container
// listens on: every container port of every form, named with the host
// for ingress ports.
func (s ContainerSpec) PortList() ([]Port, error) {
	var out []Port
	for _, p := range s.Ports {
		ps, err := record.ParsePortSpec(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSpec, err)
		}
		proto := ps.Protocol
		if ps.Ingress() {
			proto = "tcp"
		}
		for _, n := range ps.ContainerPorts() {
			out = append(out, Port{Port: n, Protocol: proto, Name: ps.Host})
		}
	}
	return out, nil
}

// Bindings are the host ports the spec publishes (Docker's forms), each
// bound on every machine that runs a container of it.
func (s ContainerSpec) Bindings() []record.Binding {
	var out []record.Binding
	for _, p := range s.Ports {
		if ps, err := record.ParsePortSpec(p); err == nil {
			out = append(out, ps.Bindings()...)
		}
	}
	return out
}

// dockerPorts are Docker's exposed ports and port bindings for the spec.
func (s ContainerSpec) dockerPorts() (nat.PortSet, nat.PortMap) {
	exposed, bindings := nat.PortSet{}, nat.PortMap{}
	for _, p := range s.Ports {
		ps, err := record.ParsePortSpec(p)
		if err != nil {
			continue // Validate said so
		}
		proto := ps.Protocol
		if ps.Ingress() {
			proto = "tcp"
		}
		for _, n := range ps.ContainerPorts() {
			exposed[nat.Port(fmt.Sprintf("%d/%s", n, proto))] = struct{}{}
		}
		for _, b := range ps.Bindings() {
			key := nat.Port(fmt.Sprintf("%d/%s", b.Port, b.Protocol))
			hp := ""
			if b.HostPort != 0 {
				hp = strconv.Itoa(int(b.HostPort))
			}
			bindings[key] = append(bindings[key], nat.PortBinding{HostIP: b.HostIP, HostPort: hp})
		}
	}
	return exposed, bindings
}

// checkBindings refuses a spec whose own published ports collide with
// each other: no machine could run even one container of it.
func (s ContainerSpec) checkBindings() error {
	bs := s.Bindings()
	for i := range bs {
		for j := range i {
			if bs[i].Collides(bs[j]) {
				return fmt.Errorf("%w: host port %s is published twice", ErrBadSpec, bs[i])
			}
		}
	}
	return nil
}

// ParseVolume parses VOLUME:/path[:ro] (a named Docker volume on the
// machine that runs the container), /host/path:/path[:ro] (a bind mount)
// or tmpfs:/path (in memory).
func ParseVolume(v string) (mount.Mount, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return mount.Mount{}, fmt.Errorf("%w: volume %q is not VOLUME:/path[:ro]", ErrBadSpec, v)
	}
	m := mount.Mount{Source: parts[0], Target: parts[1], Type: mount.TypeVolume}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return m, fmt.Errorf("%w: volume %q: mode %q is not ro or rw", ErrBadSpec, v, parts[2])
		}
	}
	if m.Source == "" || !strings.HasPrefix(m.Target, "/") {
		return m, fmt.Errorf("%w: volume %q: needs a source and an absolute container path", ErrBadSpec, v)
	}
	if m.Source == "tmpfs" {
		// tmpfs:/path is an in-memory mount, as in uncloud's -v; a
		// Docker volume named "tmpfs" cannot be asked for this way.
		m.Type, m.Source = mount.TypeTmpfs, ""
	} else if strings.HasPrefix(m.Source, "/") {
		m.Type = mount.TypeBind
	} else if !regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`).MatchString(m.Source) {
		return m, fmt.Errorf("%w: volume %q: %q is not a volume name or absolute path", ErrBadSpec, v, m.Source)
	}
	return m, nil
}

// dockerVolumes are the spec's volumes as Docker takes them. A bind mount
// goes in Binds, the form of `docker run -v`, so that a host path missing
// on the machine that runs the container is made there (a directory), as
// `docker run -v` and Compose's short syntax do: a Mount of type bind is
// refused instead, and the CLI that read a Compose file cannot make the
// path on another machine. Named volumes and tmpfs stay Mounts.
func (s ContainerSpec) dockerVolumes() (binds []string, mounts []mount.Mount) {
	for _, v := range s.Volumes {
		m, err := ParseVolume(v)
		if err != nil {
			continue // Validate refused it already
		}
		if m.Type == mount.TypeBind {
			b := m.Source + ":" + m.Target
			if m.ReadOnly {
				b += ":ro"
			}
			binds = append(binds, b)
			continue
		}
		mounts = append(mounts, m)
	}
	return binds, mounts
}

// ParseRestart parses a restart policy; empty means unless-stopped, so a
// service survives reboots and Docker restarts unless someone stopped it.
func ParseRestart(s string) (container.RestartPolicy, error) {
	name, count, hasCount := strings.Cut(s, ":")
	p := container.RestartPolicy{Name: container.RestartPolicyMode(name)}
	switch name {
	case "":
		p.Name = container.RestartPolicyUnlessStopped
	case "no", "always", "unless-stopped":
	case "on-failure":
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 0 {
				return p, fmt.Errorf("%w: restart %q: %q is not a retry count", ErrBadSpec, s, count)
			}
			p.MaximumRetryCount = n
		}
		return p, nil
	default:
		return p, fmt.Errorf("%w: restart %q is not no, always, unless-stopped or on-failure[:N]", ErrBadSpec, s)
	}
	if hasCount {
		return p, fmt.Errorf("%w: restart %q: only on-failure takes a count", ErrBadSpec, s)
	}
	return p, nil
}

// NamedVolumes are the named Docker volumes the spec mounts: they live on
// the machine that runs the container, so they tie the service to it.
func (s ContainerSpec) NamedVolumes() []string {
	var out []string
	for _, v := range s.Volumes {
		if m, err := ParseVolume(v); err == nil && m.Type == mount.TypeVolume {
			out = append(out, m.Source)
		}
	}
	return out
}
