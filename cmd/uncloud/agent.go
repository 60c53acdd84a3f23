package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/agent/hostnet"
	"github.com/uncloud-mesh/uncloud/agent/static"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

type agentCmd struct {
	DataDir   string       `help:"Where this machine's keys and state live (created by init or join)." default:"${datadir}" placeholder:"DIR"`
	Config    string       `help:"Static mode instead: bring up a mesh from a wg-quick-like file ([Interface] and [Peer] sections), without gossip or state." type:"existingfile" placeholder:"FILE"`
	Userspace bool         `help:"Use the userspace netstack even where a kernel TUN would work; kept in the data dir, so later starts keep it."`
	Kernel    bool         `help:"Use the kernel TUN again on a machine kept in userspace mode (forgets an earlier --userspace)."`
	Rootless  bool         `help:"Run inside this user's rootless Docker Engine (its user and network namespaces), so its containers get mesh addresses; refused with what is missing where that cannot work. An unprivileged agent does this anyway when such an engine runs."`
	HostNet   hostNetFlags `embed:""` // --expose, --socks5, --http-proxy: cmd/uncloud/hostnet.go

	SocketGroup string `name:"socket-group" env:"UNCLOUD_SOCKET_GROUP" help:"Group allowed on the local API socket (0660). Default: 'uncloud' if that group exists, else the socket is 0600 for the agent's user alone. 'none' forces 0600." placeholder:"GROUP"`

	ImageMaxBytes int64 `name:"image-max-bytes" default:"8589934592" help:"Largest image tarball another machine may push to this one (uncloud image push); larger pushes are refused with 413." placeholder:"BYTES"`

	SecretsDir string `name:"secrets-dir" env:"UNCLOUD_SECRETS_DIR" help:"Where containers' secrets and configs are written (0700, bind-mounted read-only into them). Default: the socket's directory/secrets (a tmpfs under /run). Docker must see the same path." placeholder:"DIR"`

	Registry registryFlags `embed:""` // cmd/uncloud/registryflags.go
	Metrics  metricsFlags  `embed:""` // cmd/uncloud/metricsflags.go

	DockerHost string       `help:"Docker Engine address for containers (default: DOCKER_HOST or unix:///var/run/docker.sock)." env:"DOCKER_HOST" placeholder:"unix:///PATH"`
	Ingress    ingressFlags `embed:""` // cmd/uncloud/ingress.go
}

func (agentCmd) Help() string {
	return fmt.Sprintf(`The agent brings this machine's end of the mesh up and keeps it up until SIGTERM or SIGINT. Normally it runs from the data dir that 'uncloud init' (or join) created, serves the local API on the socket given by --connect, gossips with the other machines and keeps the replicated state. With --config it runs a static mesh instead.

It uses a kernel TUN interface when /dev/net/tun opens and it may configure links (root or CAP_NET_ADMIN), otherwise a userspace netstack (no privileges), and logs which and why. In kernel mode a route "unreachable %[1]v" with a high metric stays installed even after the agent stops, so mesh traffic never leaves unencrypted.

%[4]s

SIGHUP re-reads the config file (static mode) and applies added, changed and removed peers without disturbing the others. In static mode --expose, --socks5 and --http-proxy are not kept: they add to the file's Expose and replace its SOCKS5 for this run, and the proxies need a loopback IP:PORT.

Examples:
  uncloud agent                                        # the machine of the data dir, with its kept settings
  uncloud agent --userspace --expose 8080 --socks5 1080 --http-proxy 3128
  uncloud agent --socks5 off                           # start without the SOCKS5 proxy, for good
  uncloud agent --config static.conf --userspace --expose 8080 --socks5 127.0.0.1:1080

Config file example:

  [Interface]
  PrivateKey = <from 'uncloud keygen'>
  Address = %[2]v
  ListenPort = 51820

  [Peer]
  PublicKey = <the other machine's>
  Endpoint = 203.0.113.7:51820
  AllowedIPs = %[3]v
  PersistentKeepalive = 25`, meshaddr.Mesh(), meshaddr.Subnet(1).MachineAddr(), meshaddr.Subnet(2), hostNetHelp)
}

func (a agentCmd) Run(g *globals) error {
	hn, err := a.HostNet.change()
	if err != nil {
		return err
	}
	switch {
	case a.Userspace && a.Kernel:
		return fmt.Errorf("--userspace and --kernel: choose one")
	case a.Userspace:
		hn.Userspace = ptr(true)
	case a.Kernel:
		hn.Userspace = ptr(false)
	}
	rootlessPID := 0
	if a.Config == "" {
		userspace := a.Userspace
		if kept, err := hostnet.Load(a.DataDir); err == nil && kept.Userspace && !a.Kernel {
			userspace = true
		}
		if rootlessPID, err = enterRootless(g.Logger, a.Rootless, userspace, a.DockerHost, os.Args[1:], stateListenPort(a.DataDir), &hostSideStart{dataDir: a.DataDir, flags: hn}); err != nil {
			return err
		}
	} else if a.Rootless {
		// A static mesh enters rootless Docker's namespaces only when
		// asked: before --rootless it never did.
		if rootlessPID, err = enterRootless(g.Logger, true, a.Userspace, a.DockerHost, os.Args[1:], staticListenPort(a.Config), nil); err != nil {
			return err
		}
	}
	var hostUDP *os.File
	if rootlessPID != 0 {
		hostUDP = takeHostUDP(g.Logger)
	}
	// Both modes run the same mesh, so the same GC settings: bench/mesh
	// runs the static mode and must measure what agents run.
	applyGCSettings()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()

	if a.Config == "" {
		gid, err := socketGroup(a.SocketGroup)
		if err != nil {
			return err
		}
		if rootlessPID != 0 && a.SocketGroup == "" {
			// In the user namespace only the user's own group is mapped:
			// the host's group uncloud cannot own the socket there.
			gid = -1
		}
		opts := agent.DaemonOptions{
			DataDir:   a.DataDir,
			Socket:    socketPath(g.Connect),
			SocketGID: gid,
			Userspace: a.Userspace,
			HostNet:   hn,
			Logger:    g.Logger,
			Version:   version,

			DockerHost:    a.DockerHost,
			ImageMaxBytes: a.ImageMaxBytes,
			SecretsDir:    a.SecretsDir,
			Ingress:       a.Ingress.options(),
			RootlessPID:   rootlessPID,
			HostUDP:       hostUDP,
		}
		a.Registry.apply(&opts)
		a.Metrics.apply(&opts)
		return runDaemon(ctx, g, opts, os.Args[1:])
	}
	return static.Run(ctx, static.Options{
		ConfigPath: a.Config,
		Userspace:  a.Userspace,
		Expose:     hn.AddExpose,
		SOCKS5:     deref(hn.SOCKS5),
		HTTPProxy:  deref(hn.HTTPProxy),
		HostUDP:    hostUDP,
		Logger:     g.Logger,
	}, reload)
}

// The agent's GC settings unless GOMEMLIMIT or GOGC say otherwise.
//
// About 34 MB of an idle agent's heap (20 peers) is wireguard-go's
// message buffers: 64 KB per batch slot, 128 slots, in each of the IPv4,
// IPv6 and TUN readers, plus the pool. The slots are what lets GRO/GSO
// carry 64 KB per read, so they stay; but at idle a slot only ever holds
// one small packet, so all but its first page stay untouched and cost no
// RSS (smaps: 12 MB of a 52 MB heap mapping resident). The GC does not
// know that: its goal is GOGC percent above the whole live heap, so
// GOGC=25 let ~11 MB of garbage (all of it touched memory) pile up over
// a 45 MB heap of which ~11 MB is real. GOGC=10 allows ~5 MB, what
// GOGC=25 would allow over the real heap. An idle agent allocates ~100
// KB/s, so that is still a GC every minute or so.
//
// The soft limit is a backstop against garbage, and must stay above what
// a transfer holds live: each packet wireguard-go holds costs another 64
// KB buffer. Before its queues were bounded (tun/inflight.go) a transfer
// held 180-480 MB, and under the earlier 64 MiB limit the GC ran
// thousands of times per bench/mesh run, emptying the buffer pools each
// time: TUN mode fell from 2.5 to 0.5 Gbit/s (the static mode bench/mesh
// runs had not applied these settings, so the bench did not show it).
// Bounded, a transfer's heap stays at 60-80 MB in kernel mode and about
// 110 MB sending in netstack mode, under 128 MiB. An earlier 48 MiB limit
// sat just above the idle live heap and made the GC run five times a
// second (5 % of a core, idle). Measured in bench/formation and
// bench/mesh.
const (
	defaultMemoryLimit = 128 << 20
	defaultGCPercent   = 10
)

func applyGCSettings() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// runDaemon runs the agent until ctx ends, its device stops, or it has a
// checked binary to upgrade to: then it re-executes on that with argv (the
// command line, without the program) (machine_upgrade_exec.go).
func runDaemon(ctx context.Context, g *globals, opts agent.DaemonOptions, argv []string) error {
	applyGCSettings()
	// Raw state writes exist for the adversarial tests only, which play a
	// member gone rogue; nothing else turns them on.
	opts.RawStateWrites = os.Getenv("UNCLOUD_TEST_RAW_WRITES") == "1"
	// init and join --foreground run the agent without its flags: the
	// variable behind --secrets-dir counts for them too.
	if opts.SecretsDir == "" {
		opts.SecretsDir = os.Getenv("UNCLOUD_SECRETS_DIR")
	}
	marks := takeUpgradeMarks()
	if opts.RootlessPID != 0 {
		opts.RootlessHost = takeHostSide(g.Logger)
	}
	opts.Binary, opts.RolledBack = installedBinary(), marks.failed
	var err error
	if opts.Handover, err = agent.NewHandover(marks.sockets); err != nil {
		g.Logger.Warn("upgrade: the previous process's sockets are not usable; listening afresh", "err", err)
	}
	deadline := time.Now().Add(upgradeDeadline)
	// A new binary on probation that hangs in its start is rolled back
	// too: its context ends at the deadline unless it has rejoined.
	dctx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	hung := time.AfterFunc(upgradeDeadline, cancelStart)
	if marks.previous == "" {
		hung.Stop()
	}
	var d *agent.Daemon
	if failStartup != "" {
		err = fmt.Errorf("fault injection (built with -X main.failStartup): %s", failStartup)
	} else {
		d, err = agent.StartDaemon(dctx, opts)
	}
	if !hung.Stop() && marks.previous != "" && err == nil && ctx.Err() == nil {
		// Up just as the deadline cancelled its context: as good as hung.
		d.Close()
		err = fmt.Errorf("not up within %v", upgradeDeadline)
	}
	if err != nil {
		if marks.previous != "" && ctx.Err() == nil {
			sockets, _ := opts.Handover.PassOn()
			passHostUDP(opts.HostUDP)
			passHostSide(g.Logger, opts.RootlessHost)
			return rollBack(g.Logger, marks.previous, opts.Binary, argv, fmt.Sprintf("version %s did not start: %v", version, err), sockets)
		}
		return err
	}
	var rejoin <-chan string
	if marks.previous != "" {
		rejoin = watchRejoin(dctx, g.Logger, d, marks.peers, deadline)
	}
	rootlessGone := watchRootless(ctx, opts.RootlessPID)
	for {
		select {
		case <-ctx.Done():
			g.Logger.Info("shutting down")
			return d.Close()
		case <-d.Wait():
			g.Logger.Error("mesh device stopped")
			return d.Close()
		case gone := <-rootlessGone:
			g.Logger.Error("leaving: the rootless Docker this agent joined is gone", "err", gone)
			return errors.Join(d.Close(), gone)
		case why, failed := <-rejoin:
			if !failed {
				rejoin = nil
				continue
			}
			sockets, _ := d.PassListeners()
			passHostSide(g.Logger, opts.RootlessHost)
			d.Close()
			passHostUDP(opts.HostUDP)
			return rollBack(g.Logger, marks.previous, opts.Binary, argv, why, sockets)
		case next := <-d.Upgrades():
			peers := d.AliveMembers()
			sockets, err := d.PassListeners()
			if err != nil {
				g.Logger.Warn("upgrade: the ingress's sockets are not handed over; the new process listens afresh", "err", err)
			}
			passHostSide(g.Logger, opts.RootlessHost)
			if err := d.Close(); err != nil {
				g.Logger.Warn("upgrade: the agent stopped with errors", "err", err)
			}
			passHostUDP(opts.HostUDP)
			return restartOn(g.Logger, next, opts.Binary, argv, peers, sockets)
		}
	}
}

// socketGroup resolves --socket-group to a group ID: -1 (0600, the
// agent's user alone) for "none", or when the default group does not
// exist; a named group that does not exist is an error.
func socketGroup(name string) (int, error) {
	if name == "none" {
		return -1, nil
	}
	lookup := name
	if lookup == "" {
		lookup = api.DefaultSocketGroup
	}
	grp, err := user.LookupGroup(lookup)
	if err != nil {
		if name == "" {
			return -1, nil
		}
		return 0, fmt.Errorf("--socket-group %q: %w (create it with 'groupadd %s', or use 'none')", name, err, name)
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric id %q", lookup, grp.Gid)
	}
	return gid, nil
}

// socketPath is where a locally started agent serves: the --connect
// target when it names a local socket, the default otherwise.
func socketPath(connect string) string {
	if strings.HasPrefix(connect, "/") {
		return connect
	}
	if strings.HasPrefix(connect, "unix://") {
		return strings.TrimPrefix(connect, "unix://")
	}
	return api.DefaultSocket
}

// deref is a flag's address, "" when not given or off (static mode keeps
// nothing, so the two are the same there).
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ptr[T any](v T) *T { return &v }
