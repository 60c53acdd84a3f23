package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/hostnet"
	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/agent/rootless"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/ingress"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Ports on the mesh address. WireGuard's UDP port is the only one on the
// underlay; these are reachable only through the tunnel.
const (
	GossipPort     = 7946
	MachineAPIPort = 51822
)

// DaemonOptions configure a networked agent.
type DaemonOptions struct {
	DataDir   string
	Socket    string // local API socket; default api.DefaultSocket
	SocketGID int    // group allowed on the socket (0660); -1: 0600, the agent's user alone
	Userspace bool
	// HostNet are the start flags for the host networking settings kept
	// in the data dir (agent/hostnet): --expose adds ports, --socks5 and
	// --http-proxy replace the addresses; what they do not name stays.
	HostNet hostnet.Change
	Logger  *slog.Logger
	Version string
	Ingress IngressOptions // used while the machine has the ingress role
	// RootlessPID is the rootless dockerd whose user and network
	// namespaces this agent runs in (agent/rootless), 0 when it runs in
	// the host's: its mode is then reported as rootless.
	RootlessPID int
	// RootlessHost is what the agent's starter made on the host's
	// network before entering the rootless namespaces (the proxies'
	// listeners, the host-side helper that dials exposed ports); used
	// when RootlessPID is set.
	RootlessHost *rootless.HostSide
	// DockerHost is the Docker Engine's address; empty means DOCKER_HOST
	// or unix:///var/run/docker.sock.
	DockerHost string
	// RawStateWrites lets the local API write stored records as given,
	// unchecked and unsigned by this machine: adversarial tests use it to
	// act as a member gone rogue (with this machine's keys, the writes
	// are what such a member could do). Off unless the test asks.
	RawStateWrites bool
	// ImageMaxBytes bounds one image tarball pushed to this machine;
	// zero means DefaultImageMaxBytes.
	ImageMaxBytes int64
	// SecretsDir holds the secrets and configs of this machine's
	// containers (bind-mounted read-only); default <socket dir>/secrets,
	// a tmpfs under /run normally.
	SecretsDir string
	// RegistryPort is the loopback port of the image registry (push.go);
	// zero means oci.DefaultPort, negative turns it off.
	RegistryPort int
	// RegistryMaxBytes caps the blobs the registry keeps for the next
	// push; zero means DefaultRegistryMaxBytes.
	RegistryMaxBytes int64
	// MetricsAddr is where /metrics is served (IP:PORT, or mesh:PORT for
	// the mesh address); empty: nowhere. Only loopback and the mesh
	// address unless MetricsPublic (agent/metrics.ParseAddr).
	MetricsAddr   string
	MetricsPublic bool
	// Binary is the installed binary an upgrade replaces (upgrade.go);
	// empty: upgrades are refused. RolledBack is why the previous
	// process's upgrade was undone, when this one is the restored binary.
	Binary     string
	RolledBack string
	// Handover carries the ingress's sockets across an upgrade's
	// re-exec (handover.go); nil: the ingress listens afresh.
	Handover *Handover
	// HostUDP is the WireGuard socket a rootless agent's starter bound on
	// the host's network (rootless.OpenHostUDP); nil: the device binds
	// ListenPort where it runs. The caller keeps and closes it.
	HostUDP *os.File
}

// Daemon is a running agent: the mesh device, gossip, the replicated
// state, the peer manager and both APIs.
type Daemon struct {
	opts DaemonOptions
	log  *slog.Logger
	// state is read freely for what never changes (IDs, keys, subnet);
	// Name, Roles and the gossip keys change at runtime, in members, and
	// are read through snapshot.
	state    *membership.MachineState
	identity *api.Identity
	verifier *trust.Verifier
	members  *membership.Members // who is in the network (agent/membership)

	dev           *tun.Device
	meshListeners meshListeners // bound before any connection leaves (apis.go)
	gossip        *gossip.Node
	store         *crdt.Store
	machineClient *http.Client       // the mTLS transport, shared with the CRDT block fetcher
	machineAPI    *api.MachineClient // typed machine API calls over machineClient
	peersChanged  chan struct{}      // pokes the peer manager after token changes
	reach         *meshReach         // which machines are reachable now (resolver, ingress)
	nat           *natLayer          // NAT traversal; nil until started
	ingress       *ingressRunner
	containers    *localDocker               // this machine's Docker, see containers.go
	hostnet       *hostnet.Manager           // exposed ports and proxies (hostnet.go)
	dns           atomic.Pointer[dnsService] // the resolver, once started (dns.go)
	// ingressMetrics count the ingress's requests when metrics are
	// served (metrics.go); nil otherwise.
	ingressMetrics *ingress.Metrics

	ctx    context.Context // the daemon's lifetime, for work started by calls
	cancel context.CancelFunc
	wg     sync.WaitGroup
	life   lifecycle // what Close stops, and in which order
	up     *upgrader // binaries received for an upgrade (upgrade.go)

	// Orchestrator serves the container commands (api.ContainerBackend,
	// DeployBackend, ImageBackend) for the local API; see orchestration.go.
	*orchestrate.Orchestrator
}

// StartDaemon brings everything up from the data dir. It returns once
// the machine is reachable on the mesh and its API answers; the work
// continues in the background until Close or ctx ends.
func StartDaemon(ctx context.Context, opts DaemonOptions) (_ *Daemon, err error) {
	if opts.DataDir == "" {
		opts.DataDir = membership.DefaultDataDir
	}
	if opts.Socket == "" {
		opts.Socket = api.DefaultSocket
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	st, err := membership.LoadMachineState(opts.DataDir)
	if err != nil {
		return nil, err
	}
	identity, err := api.NewIdentity(st.IdentitySeed)
	if err != nil {
		return nil, fmt.Errorf("identity key in %s: %w", opts.DataDir, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Daemon{opts: opts, log: opts.Logger, state: st, identity: identity, ctx: ctx, cancel: cancel,
		peersChanged: make(chan struct{}, 1), up: newUpgrader()}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	d.members, err = membership.New(membership.Config{
		DataDir:  opts.DataDir,
		State:    st,
		Identity: identity,
		Log:      d.log,
		Ctx:      ctx,
		Go: func(f func()) {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				f()
			}()
		},
		PokePeers:      d.pokePeers,
		Endpoints:      d.candidateEndpoints,
		Reach:          d.reachability,
		GossipPort:     GossipPort,
		MachineAPIPort: MachineAPIPort,
	})
	if err != nil {
		return nil, err
	}

	d.hostnet, err = hostnet.Open(opts.DataDir, opts.HostNet, ReservedPorts(), d.log)
	if err != nil {
		return nil, err
	}
	d.dev, err = tun.Open(ctx, tun.Config{
		PrivateKey: st.WireGuardKey,
		Address:    st.MeshAddress(),
		ListenPort: st.ListenPort,
		Userspace:  opts.Userspace || d.hostnet.Settings().Userspace, // kept by join --userspace
		Expose:     d.hostnet.Settings().Expose,
		Socket:     opts.HostUDP,
		Logger:     d.log,
	})
	if err != nil {
		return nil, fmt.Errorf("bring mesh up: %w", err)
	}
	d.life.closeLast(d.dev.Close)
	if err := d.dev.SyncPeers(d.seedPeers()); err != nil {
		return nil, fmt.Errorf("peers from seeds: %w", err)
	}
	if err := d.bindMeshListeners(ctx); err != nil {
		return nil, err
	}

	if err := d.startGossip(ctx); err != nil {
		return nil, err
	}
	if err := d.startStore(ctx); err != nil {
		return nil, err
	}
	// The machine API serves before the record is announced (here, or by
	// NAT's first publish a tick later): whoever hears of a new machine's
	// first record fetches it from that machine, and a refused fetch
	// is retried for about a second (crdt's prefetch retry), then waits
	// for the next announcement.
	d.startContainers(ctx)
	d.startReseal(ctx)
	if err := d.startNAT(ctx); err != nil {
		return nil, err
	}
	if err := d.startMachineAPI(ctx); err != nil {
		return nil, err
	}
	if err := d.members.Publish(ctx); err != nil {
		return nil, err
	}
	d.members.Rejoin(ctx)
	d.startPeerManager(ctx)
	if err := d.startJoinServer(ctx); err != nil {
		return nil, err
	}
	d.startReach(ctx)
	d.startCatchUp(ctx)
	if err := d.startMetrics(ctx); err != nil {
		return nil, err
	}
	d.startIngress(ctx)
	if err := d.startDNS(ctx); err != nil {
		return nil, err
	}
	d.startHostNet(ctx)
	if err := d.startLocalAPI(ctx); err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.members.PullKeyrings(ctx)
	}()
	d.log.Info("machine up", "network", st.NetworkID, "machine", st.Name, "id", st.MachineID,
		"address", st.MeshAddress(), "mode", d.mode(), "link", d.dev.Link(), "port", st.ListenPort)
	return d, nil
}

// gossipRejoinInterval bounds how long a healed partition goes unnoticed.
const gossipRejoinInterval = 8 * time.Second

func (d *Daemon) startGossip(ctx context.Context) error {
	var seeds []string
	for _, s := range d.state.Seeds {
		seeds = append(seeds, netip.AddrPortFrom(s.Address, GossipPort).String())
	}
	// In netstack mode the mesh address exists only inside the agent.
	var network gossip.Network
	if d.dev.Mode() == tun.ModeNetstack {
		network = d.dev
	}
	node, err := gossip.New(ctx, gossip.Config{
		Network:  network,
		Name:     d.state.MachineID,
		BindAddr: netip.AddrPortFrom(d.state.MeshAddress(), GossipPort),
		Keys:     d.snapshot().GossipKeys,
		Meta:     d.encodeMeta(),
		Seeds:    seeds,
		Logger:   d.log.With("component", "gossip"),
		// A healed partition is noticed only by a rejoin (memberlist
		// stops talking to members it declared dead); a rejoin attempt
		// costs one dial per away member, so try often.
		RejoinInterval: gossipRejoinInterval,
	})
	if err != nil {
		return fmt.Errorf("start gossip on %v: %w", d.state.MeshAddress(), err)
	}
	d.gossip = node
	d.life.closeLast(node.Close)
	return nil
}

func (d *Daemon) startStore(ctx context.Context) error {
	d.machineClient = api.NewMachineHTTP(d.identity, d.members.IdentityByAddr, d.dev.DialContext)
	d.machineAPI = api.NewMachineClient(d.machineClient, d.members.MachineAPIURL)
	fetcher := &crdt.HTTPFetcher{
		BaseURL: d.members.MachineAPIURL,
		Client:  d.machineClient,
		Log:     d.log.With("component", "crdt-fetch"),
	}
	root, err := trust.DecodeKey(d.state.RootKey)
	if err != nil || d.state.Membership == nil {
		return fmt.Errorf("the machine state in %s has no signed membership (it was made by an uncloud before signed membership): remove the data dir and join again", d.opts.DataDir)
	}
	verifier, err := trust.NewVerifier(trust.Config{Network: d.state.NetworkID, Root: root, Dir: d.opts.DataDir, Log: d.log})
	if err != nil {
		return err
	}
	d.verifier = verifier
	store, err := crdt.Open(ctx, crdt.Config{
		Signer:   trust.NewSigner(d.state.MachineID, d.identity.PrivateKey()),
		Verifier: verifier,
		Dir:      filepath.Join(d.opts.DataDir, "state"),
		Gossip:   d.gossip,
		Fetcher:  fetcher,
		LiveMachines: func() []string {
			var names []string
			for _, m := range d.gossip.Members() {
				if m.State == gossip.Alive && m.Name != d.state.MachineID {
					names = append(names, m.Name)
				}
			}
			return names
		},
		Log: d.log,
	})
	if err != nil {
		return fmt.Errorf("open state in %s: %w", d.opts.DataDir, err)
	}
	d.store = store
	d.members.Attach(membership.Parts{Records: store, Calls: d.machineAPI, Device: d.dev, Gossip: d.gossip})
	// The seeds became peers before the store opened; now that the revoked
	// set can be read, a revoked seed loses its peer at once rather than
	// at the peer manager's first pass.
	if err := d.dev.SyncPeers(d.seedPeers()); err != nil {
		d.log.Error("peers from seeds", "err", err)
	}
	d.life.closeLast(store.Close)
	return nil
}

// snapshot is a copy of the machine state as it is now.
func (d *Daemon) snapshot() membership.MachineState { return d.members.Snapshot() }

// machines lists the machine records, without revoked machines.
func (d *Daemon) machines(ctx context.Context) ([]*record.Machine, error) {
	return d.members.MachineRecords(ctx)
}

// Close stops the daemon in the order lifecycle states; it is safe to
// call more than once.
func (d *Daemon) Close() error {
	return d.life.shutdown(d.cancel, d.wg.Wait)
}

// Wait is closed when the mesh device stops.
func (d *Daemon) Wait() <-chan struct{} { return d.dev.Wait() }
