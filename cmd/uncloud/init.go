package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

type initCmd struct {
	Name       string        `help:"This machine's name (a DNS label); default: the host name." placeholder:"NAME"`
	PublicIP   netip.Addr    `name:"public-ip" help:"An address other machines can reach this one at, published as its first endpoint (e.g. a VPS's public IP)." placeholder:"IP"`
	Port       uint16        `help:"WireGuard UDP port." default:"51820"`
	DataDir    string        `help:"Where keys and state are kept (0700)." default:"${datadir}" placeholder:"DIR"`
	Userspace  bool          `help:"Use the userspace netstack even where a kernel TUN would work; kept in the data dir, so later starts keep it (agent --kernel forgets it)."`
	Foreground bool          `help:"Run the agent in the foreground instead of starting it in the background (for containers and supervisors)."`
	Registry   registryFlags `embed:""`
	HostNet    hostNetFlags  `embed:""` // cmd/uncloud/hostnet.go
	Metrics    metricsFlags  `embed:""` // cmd/uncloud/metricsflags.go
}

func (initCmd) Help() string {
	return fmt.Sprintf(`Creates a new network: its ID, the gossip key, this machine's WireGuard and identity keys, and subnet %v for this machine (which is %v on the mesh). Secrets stay in the data dir, mode 0600.

Then the agent starts: in the background (logging to DATA_DIR/agent.log) unless --foreground is given. The machine works alone until others join.

%[3]s

Examples:
  uncloud init --name web-1 --public-ip 203.0.113.7
  uncloud init --userspace --expose 8080 --socks5 1080 --http-proxy 3128`, meshaddr.Subnet(1), meshaddr.Subnet(1).MachineAddr(), hostNetHelp)
}

func (c initCmd) Run(g *globals) error {
	if err := c.Metrics.check(); err != nil {
		return err
	}
	if existing, err := membership.LoadMachineState(c.DataDir); err == nil {
		return fmt.Errorf("this machine is already %q in network %s (data dir %s): start its agent with 'uncloud agent', or remove %s to start over",
			existing.Name, existing.NetworkID, c.DataDir, c.DataDir)
	} else if !errors.Is(err, membership.ErrNotInitialized) {
		return err
	}
	hn, err := c.HostNet.change()
	if err != nil {
		return err
	}
	st, err := membership.NewNetwork(membership.InitOptions{Name: c.Name, PublicIP: c.PublicIP, ListenPort: c.Port})
	if err != nil {
		return err
	}
	if err := st.Save(c.DataDir); err != nil {
		return err
	}
	if c.Userspace {
		hn.Userspace = ptr(true) // kept: a later start (install's unit, a reboot) stays in userspace
	}
	if err := saveHostNet(c.DataDir, hn); err != nil {
		return err
	}
	fmt.Printf("Created network %s: this machine is %q, %s on the mesh.\n", st.NetworkID, st.Name, st.MeshAddress())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = startAgent(ctx, g, c.DataDir, c.Userspace, c.Foreground, c.Registry, c.Metrics)
	if err != nil || c.Foreground {
		return err
	}
	fmt.Println("Check it with 'uncloud status'.")
	return nil
}

// startAgent runs the agent on a freshly written data dir: in the
// foreground until ctx ends, or in the background, waiting until its API
// answers. It returns the socket the agent serves.
func startAgent(ctx context.Context, g *globals, dataDir string, userspace, foreground bool, reg registryFlags, met metricsFlags) (string, error) {
	socket := socketPath(g.Connect)
	if foreground {
		gid, err := socketGroup("")
		if err != nil {
			return socket, err
		}
		// Inside a rootless Docker the process becomes the plain agent
		// (the machine exists by now; init or join must not run twice).
		agentArgs := append([]string{"--connect", socket, "--log-level", g.LogLevel.String(), "agent", "--data-dir", dataDir}, reg.args()...)
		rootlessPID, err := enterRootless(g.Logger, false, userspace, os.Getenv("DOCKER_HOST"), append(agentArgs, met.args()...), stateListenPort(dataDir), &hostSideStart{dataDir: dataDir})
		if err != nil {
			return socket, err
		}
		opts := agent.DaemonOptions{DataDir: dataDir, Socket: socket, SocketGID: gid,
			Userspace: userspace, Logger: g.Logger, Version: version, RootlessPID: rootlessPID}
		reg.apply(&opts)
		met.apply(&opts)
		// An upgrade re-executes the agent itself, not the init or join
		// that made the data dir; the environment carries the rest
		// (DOCKER_HOST, UNCLOUD_SECRETS_DIR).
		argv := []string{"--connect", socket, "--log-level", g.LogLevel.String(), "agent", "--data-dir", dataDir}
		if userspace {
			argv = append(argv, "--userspace")
		}
		argv = append(append(argv, reg.args()...), met.args()...)
		return socket, runDaemon(ctx, g, opts, argv)
	}
	more := append([]string{"--log-level", g.LogLevel.String()}, reg.args()...)
	pid, logPath, err := startBackgroundAgent(dataDir, socket, userspace, append(more, met.args()...))
	if err != nil {
		return socket, err
	}
	st, err := waitForAgent(socket, 30*time.Second)
	if err != nil {
		return socket, fmt.Errorf("the agent (pid %d) did not come up: %w; see %s", pid, err, logPath)
	}
	fmt.Printf("The agent runs in the background (pid %d, %s mode, log %s).\n", pid, st.Mode, logPath)
	printHostNet(st.HostNet)
	return socket, nil
}

// startBackgroundAgent starts `uncloud agent` detached from this terminal
// (its own session), so it outlives the init command.
func startBackgroundAgent(dataDir, socket string, userspace bool, more []string) (int, string, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, "", fmt.Errorf("find own binary to start the agent: %w", err)
	}
	logPath := filepath.Join(dataDir, "agent.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, "", fmt.Errorf("open agent log: %w", err)
	}
	defer logFile.Close()
	args := []string{"--connect", socket, "agent", "--data-dir", dataDir}
	if userspace {
		args = append(args, "--userspace")
	}
	args = append(args, more...)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, "", fmt.Errorf("start agent: %w", err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return pid, logPath, nil
}

func waitForAgent(socket string, timeout time.Duration) (api.Status, error) {
	client, err := api.NewClient(socket, api.SSHOptions{})
	if err != nil {
		return api.Status{}, err
	}
	defer client.Close()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var st api.Status
		st, lastErr = client.Status(ctx)
		cancel()
		if lastErr == nil {
			return st, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return api.Status{}, lastErr
}
