package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/client"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Names the agent gives to what it owns in Docker and in the kernel.
const (
	NetworkName = "uncloud"
	// BridgeName is the bridge interface of NetworkName; the WireGuard
	// interface is called "uncloud", so the bridge is named apart.
	BridgeName   = "uncloud-br"
	LabelService = "uncloud.service"
	LabelMachine = "uncloud.machine"
	// LabelSpec carries the ContainerSpec (JSON) a container was made from,
	// so a machine can recreate or describe it without the state.
	LabelSpec = "uncloud.spec"
	// LabelManaged marks the network as created by the agent.
	LabelManaged = "uncloud.managed"
)

// ErrUnavailable wraps every failure to reach the Docker Engine.
var ErrUnavailable = errors.New("Docker is not available")

// Config describes the machine the runtime works for.
type Config struct {
	MachineID   string
	MachineName string
	// Subnet is the machine's /24; its MachineAddr is the bridge
	// gateway, the machine's mesh address and its DNS resolver.
	Subnet meshaddr.Subnet
	// MTU of the tunnel; the bridge gets the same so containers never
	// send packets the tunnel must fragment. Zero means
	// meshaddr.MaxTunnelMTU.
	MTU int
	// MeshInterface is the WireGuard interface ("uncloud"); empty in
	// netstack mode, where no kernel forwarding to the mesh exists.
	MeshInterface string
	// DockerHost is the engine's address; empty means DOCKER_HOST or
	// unix:///var/run/docker.sock.
	DockerHost string
	// Network, Bridge and ChainTag name the Docker network, its bridge
	// interface and the firewall chains; defaults NetworkName, BridgeName
	// and "" (chains UNCLOUD-*). Tests set them to stay apart from a real
	// agent on the same host.
	Network, Bridge, ChainTag string
	// Firewall applies the host rules; nil uses iptables.
	Firewall Firewall
	Logger   *slog.Logger
	// SecretsDir holds the secrets and configs of this machine's
	// containers, one 0700 directory each, bind-mounted read-only; empty:
	// containers with secrets or configs cannot be created here.
	SecretsDir string
}

// Runtime is the local Docker Engine as the agent uses it.
type Runtime struct {
	cfg     Config
	log     *slog.Logger
	docker  *client.Client
	gateway netip.Addr
	fw      Firewall

	mu      sync.Mutex
	version int // Docker's major version, after Connect
}

// New makes a runtime; it does not talk to Docker until Connect.
func New(cfg Config) (*Runtime, error) {
	if err := cfg.Subnet.Check(); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if cfg.MTU == 0 {
		cfg.MTU = meshaddr.MaxTunnelMTU
	}
	// Every tunnel MTU the address plan produces (down to the 1156 of a
	// 1280-byte underlay; the mesh is IPv4 only, so below 1280 is fine),
	// and up to jumbo frames for a tunnel MTU set by hand.
	if cfg.MTU < meshaddr.MinTunnelMTU || cfg.MTU > meshaddr.MaxUnderlayMTU {
		return nil, fmt.Errorf("runtime: MTU %d is outside %d..%d", cfg.MTU, meshaddr.MinTunnelMTU, meshaddr.MaxUnderlayMTU)
	}
	if cfg.Network == "" {
		cfg.Network = NetworkName
	}
	if cfg.Bridge == "" {
		cfg.Bridge = BridgeName
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("runtime: bridge name %q is longer than 15 bytes", cfg.Bridge)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.DockerHost != "" {
		opts = append(opts, client.WithHost(cfg.DockerHost))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("runtime: Docker client for %q: %w", cfg.DockerHost, err)
	}
	fw := cfg.Firewall
	if fw == nil {
		fw = &IPTables{}
	}
	return &Runtime{cfg: cfg, log: cfg.Logger, docker: c, gateway: cfg.Subnet.MachineAddr(), fw: fw}, nil
}

// Client is the Docker client, for tests and image transfer.
func (r *Runtime) Client() *client.Client { return r.docker }

// Gateway is the bridge gateway, the machine's mesh address.
func (r *Runtime) Gateway() netip.Addr { return r.gateway }

// Close releases the Docker client.
func (r *Runtime) Close() error { return r.docker.Close() }

// Connect checks that Docker answers and learns its version.
func (r *Runtime) Connect(ctx context.Context) error {
	v, err := r.docker.ServerVersion(ctx)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrUnavailable, r.docker.DaemonHost(), err)
	}
	major := dockerMajor(v.Version)
	r.mu.Lock()
	r.version = major
	r.mu.Unlock()
	r.log.Info("docker engine", "version", v.Version, "api", r.docker.ClientVersion(), "host", r.docker.DaemonHost())
	return nil
}

func (r *Runtime) dockerMajor() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version
}

// dockerMajor parses "20.10.24+dfsg1" or "28.5.2" into its major number;
// 0 when unknown.
func dockerMajor(v string) int {
	head, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(head)
	if err != nil {
		return 0
	}
	return n
}

// Capacity is what Docker reports of this machine: CPUs, total memory
// (bytes) and architecture (Docker's name, e.g. x86_64, aarch64).
func (r *Runtime) Capacity(ctx context.Context) (cpus int, memory int64, arch string, err error) {
	info, err := r.docker.Info(ctx)
	if err != nil {
		return 0, 0, "", fmt.Errorf("%w: docker info: %w", ErrUnavailable, err)
	}
	return info.NCPU, info.MemTotal, info.Architecture, nil
}
