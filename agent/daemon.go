package agent

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
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
	SocketGID int    // group allowed on the socket; -1 keeps the process group
	Userspace bool
	Expose    []tun.ExposedPort
	Logger    *slog.Logger
	Version   string
	Ingress   IngressOptions // used while the machine has the ingress role
	// DockerHost is the Docker Engine's address; empty means DOCKER_HOST
	// or unix:///var/run/docker.sock.
	DockerHost string
}

// Daemon is a running agent: the mesh device, gossip, the replicated
// state, the peer manager and both APIs.
type Daemon struct {
	opts DaemonOptions
	log  *slog.Logger
	// state is read freely for what never changes (IDs, keys, subnet);
	// Name, Roles and the gossip keys change at runtime, under stateMu,
	// through updateState and snapshot.
	state    *MachineState
	stateMu  sync.Mutex
	identity *api.Identity

	dev           *tun.Device
	gossip        *gossip.Node
	store         *crdt.Store
	machineClient *http.Client       // the mTLS transport, shared with the CRDT block fetcher
	machineAPI    *api.MachineClient // typed machine API calls over machineClient
	tokens        *tokenBook
	promises      *promiseBook
	peersChanged  chan struct{} // pokes the peer manager after token changes
	known         atomic.Pointer[[]knownMachine]
	reach         *meshReach  // which machines are reachable now (resolver, ingress)
	storeUp       atomic.Bool // d.store is set (it is read by callbacks the store runs while opening)
	nat           *natLayer   // NAT traversal; nil until started
	ingress       *ingressRunner
	containers    *containerPart             // Docker, see containers.go
	dns           atomic.Pointer[dnsService] // the resolver, once started (dns.go)

	ctx    context.Context // the daemon's lifetime, for work started by calls
	cancel context.CancelFunc
	wg     sync.WaitGroup
	life   lifecycle // what Close stops, and in which order

	// Orchestrator serves the container commands (api.ContainerBackend,
	// DeployBackend, ImageBackend) for the local API; see orchestration.go.
	*orchestrate.Orchestrator
}

// StartDaemon brings everything up from the data dir. It returns once
// the machine is reachable on the mesh and its API answers; the work
// continues in the background until Close or ctx ends.
func StartDaemon(ctx context.Context, opts DaemonOptions) (_ *Daemon, err error) {
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	if opts.Socket == "" {
		opts.Socket = api.DefaultSocket
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	st, err := LoadMachineState(opts.DataDir)
	if err != nil {
		return nil, err
	}
	identity, err := api.NewIdentity(st.IdentitySeed)
	if err != nil {
		return nil, fmt.Errorf("identity key in %s: %w", opts.DataDir, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Daemon{opts: opts, log: opts.Logger, state: st, identity: identity, ctx: ctx, cancel: cancel,
		peersChanged: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.tokens, err = loadTokenBook(opts.DataDir); err != nil {
		return nil, err
	}
	if d.promises, err = loadPromiseBook(opts.DataDir); err != nil {
		return nil, err
	}

	d.dev, err = tun.Open(ctx, tun.Config{
		PrivateKey: st.WireGuardKey,
		Address:    st.MeshAddress(),
		ListenPort: st.ListenPort,
		Userspace:  opts.Userspace,
		Expose:     opts.Expose,
		Logger:     d.log,
	})
	if err != nil {
		return nil, fmt.Errorf("bring mesh up: %w", err)
	}
	d.life.closeLast(d.dev.Close)
	if err := d.dev.SyncPeers(d.seedPeers()); err != nil {
		return nil, fmt.Errorf("peers from seeds: %w", err)
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
	// waits for the next announcement.
	d.startContainers(ctx)
	if err := d.startNAT(ctx); err != nil {
		return nil, err
	}
	if err := d.startMachineAPI(ctx); err != nil {
		return nil, err
	}
	if err := d.publishMachine(ctx); err != nil {
		return nil, err
	}
	d.rejoinKnown(ctx)
	d.startPeerManager(ctx)
	if err := d.startJoinServer(ctx); err != nil {
		return nil, err
	}
	d.startReach(ctx)
	d.startIngress(ctx)
	if err := d.startDNS(ctx); err != nil {
		return nil, err
	}
	if err := d.startLocalAPI(ctx); err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go d.pullKeyrings(ctx)
	d.log.Info("machine up", "network", st.NetworkID, "machine", st.Name, "id", st.MachineID,
		"address", st.MeshAddress(), "mode", d.dev.Mode(), "port", st.ListenPort)
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
	d.machineClient = api.NewMachineHTTP(d.identity, d.machineIdentityByAddr, d.dev.DialContext)
	d.machineAPI = api.NewMachineClient(d.machineClient, d.machineAPIURL)
	fetcher := &crdt.HTTPFetcher{
		BaseURL: d.machineAPIURL,
		Client:  d.machineClient,
		Log:     d.log.With("component", "crdt-fetch"),
	}
	store, err := crdt.Open(ctx, crdt.Config{
		Dir:     filepath.Join(d.opts.DataDir, "state"),
		Gossip:  d.gossip,
		Fetcher: fetcher,
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
	d.storeUp.Store(true)
	d.life.closeLast(store.Close)
	return nil
}

// rejoinKnown contacts, in the background, every machine in the records:
// after a restart the seeds of the original join may be long gone, while
// the records name everyone the machine knew.
func (d *Daemon) rejoinKnown(ctx context.Context) {
	var addrs []string
	for _, m := range d.knownMachines(ctx) {
		if m.ID != d.state.MachineID {
			addrs = append(addrs, netip.AddrPortFrom(m.Subnet.MachineAddr(), GossipPort).String())
		}
	}
	if len(addrs) == 0 {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if _, err := d.gossip.Join(ctx, addrs); err != nil && ctx.Err() == nil {
			d.log.Info("no known machine answered yet; gossip keeps retrying", "err", err)
		}
	}()
}

// snapshot is a copy of the machine state as it is now.
func (d *Daemon) snapshot() MachineState {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	return *d.state
}

// updateState changes the machine state on disk first, then in memory:
// what the agent acts on has always been saved, so a crash in between
// loses nothing.
func (d *Daemon) updateState(change func(*MachineState) error) (MachineState, error) {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	next := *d.state
	next.Roles = slices.Clone(next.Roles)
	next.GossipKeys = slices.Clone(next.GossipKeys)
	if err := change(&next); err != nil {
		return *d.state, err
	}
	if reflect.DeepEqual(next, *d.state) {
		return next, nil // nothing changed: no write
	}
	if err := next.Save(d.opts.DataDir); err != nil {
		return *d.state, fmt.Errorf("save machine state: %w", err)
	}
	*d.state = next
	return next, nil
}

// publishMachine writes this machine's record; only this machine writes it.
func (d *Daemon) publishMachine(ctx context.Context) error {
	st := d.snapshot()
	rec := &record.Machine{
		ID:           d.state.MachineID,
		Name:         st.Name,
		Roles:        st.Roles,
		Subnet:       d.state.Subnet.String(),
		WireGuardKey: d.state.WireGuardKey.PublicKey().String(),
		IdentityKey:  api.EncodeKey(d.identity.PublicKey()),
		Endpoints:    endpointStrings(d.candidateEndpoints()),
	}
	if cur, err := d.store.Get(ctx, rec.Key()); err == nil {
		if m, ok := cur.(*record.Machine); ok && sameMachine(m, rec) {
			return nil // unchanged: do not grow the DAG on every restart
		}
	}
	if err := d.store.Put(ctx, rec.Key(), rec); err != nil {
		return fmt.Errorf("publish machine record: %w", err)
	}
	return nil
}

func sameMachine(a, b *record.Machine) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Subnet == b.Subnet && a.WireGuardKey == b.WireGuardKey &&
		a.IdentityKey == b.IdentityKey && slices.Equal(a.Endpoints, b.Endpoints) && slices.Equal(a.Roles, b.Roles)
}

// knownMachine is a machine this one may talk to over the machine API:
// from the records, or, before those have replicated, from the seeds it
// joined with and the machines it admitted.
type knownMachine struct {
	ID          string
	Subnet      meshaddr.Subnet
	IdentityKey string
}

// knownMachines is who may call this machine's API, and whom it may call.
// The peer manager publishes this view whenever it applies peers (every
// record change, revocation, token change, and every 30 s), so the checks
// on every TLS handshake and request read a snapshot instead of scanning
// the store; before its first pass the view is built from the store.
func (d *Daemon) knownMachines(ctx context.Context) []knownMachine {
	if known := d.known.Load(); known != nil {
		return *known
	}
	if !d.storeUp.Load() {
		// The store fetches blocks while it opens, before d.store is set:
		// only the seeds and pending joiners are known then.
		_, pending := d.tokens.peers(time.Now())
		return buildKnown(nil, nil, append(append([]Seed(nil), d.state.Seeds...), pending...))
	}
	machines, err := d.machines(ctx)
	if err != nil {
		d.log.Error("list known machines", "err", err)
	}
	_, pending := d.tokens.peers(time.Now())
	return buildKnown(machines, d.revoked(ctx), append(append([]Seed(nil), d.state.Seeds...), pending...))
}

// buildKnown merges records and seeds (records first: they are newer);
// a revoked machine is never known again, whatever a seed says.
func buildKnown(machines []*record.Machine, revoked map[string]*record.Revoked, seeds []Seed) []knownMachine {
	var out []knownMachine
	seen := map[string]bool{}
	for id := range revoked {
		seen[id] = true
	}
	for _, m := range machines {
		if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil && !seen[m.ID] {
			out = append(out, knownMachine{ID: m.ID, Subnet: n, IdentityKey: m.IdentityKey})
			seen[m.ID] = true
		}
	}
	for _, s := range seeds {
		n, err := meshaddr.SubnetOfPrefix(s.Subnet)
		if s.MachineID == "" || seen[s.MachineID] || err != nil {
			continue
		}
		out = append(out, knownMachine{ID: s.MachineID, Subnet: n, IdentityKey: s.IdentityKey})
		seen[s.MachineID] = true
	}
	return out
}

// machineAPIURL maps a machine ID to its machine API base URL.
func (d *Daemon) machineAPIURL(machineID string) (string, error) {
	for _, m := range d.knownMachines(context.Background()) {
		if m.ID == machineID {
			return "https://" + net.JoinHostPort(m.Subnet.MachineAddr().String(), strconv.Itoa(MachineAPIPort)), nil
		}
	}
	return "", fmt.Errorf("machine %s is not known here yet", machineID)
}

// machineIdentityByAddr pins the machine API of the machine that owns addr.
func (d *Daemon) machineIdentityByAddr(addr netip.Addr) (ed25519.PublicKey, error) {
	for _, m := range d.knownMachines(context.Background()) {
		if m.Subnet.Prefix().Contains(addr) {
			return api.DecodeKey(m.IdentityKey)
		}
	}
	return nil, fmt.Errorf("no known machine owns %v", addr)
}

// AuthorizeMachine accepts identity keys of known machines (api.Authorizer).
func (d *Daemon) AuthorizeMachine(pub ed25519.PublicKey) (string, error) {
	want := api.EncodeKey(pub)
	for _, m := range d.knownMachines(context.Background()) {
		if m.IdentityKey == want {
			return m.ID, nil
		}
	}
	return "", api.ErrUnknownMachine
}

// machines lists the machine records, without revoked machines.
func (d *Daemon) machines(ctx context.Context) ([]*record.Machine, error) {
	recs, err := d.store.List(ctx, record.MachinesPrefix)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	revoked := d.revoked(ctx)
	out := make([]*record.Machine, 0, len(recs))
	for _, r := range recs {
		if m, ok := r.(*record.Machine); ok && revoked[m.ID] == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// revoked is the add-only set of removed machines, by machine ID.
func (d *Daemon) revoked(ctx context.Context) map[string]*record.Revoked {
	out := map[string]*record.Revoked{}
	recs, err := d.store.List(ctx, record.RevokedPrefix)
	if err != nil {
		d.log.Error("read revoked machines", "err", err)
		return out
	}
	for _, r := range recs {
		if rv, ok := r.(*record.Revoked); ok {
			out[rv.MachineID] = rv
		}
	}
	return out
}

// Close stops the daemon in the order lifecycle states; it is safe to
// call more than once.
func (d *Daemon) Close() error {
	return d.life.shutdown(d.cancel, d.wg.Wait)
}

// Wait is closed when the mesh device stops.
func (d *Daemon) Wait() <-chan struct{} { return d.dev.Wait() }
