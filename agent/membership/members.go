package membership

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Records is the replicated state as membership uses it; *crdt.Store
// satisfies it.
type Records interface {
	Get(ctx context.Context, key string) (crdt.Record, error)
	Put(ctx context.Context, key string, r crdt.Record) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]crdt.Record, error)
	// SignedBy lists the digests of a machine's signatures that this
	// replica believes: what a removal keeps.
	SignedBy(ctx context.Context, machineID string, prefixes ...string) ([]string, error)
	// GetSigned and PutSigned move a record with its writer's signature
	// (revocations travel with a gossip key push).
	GetSigned(ctx context.Context, key string) ([]byte, error)
	PutSigned(ctx context.Context, key string, raw []byte) error
}

// MachineCalls are the machine API calls membership makes to other
// machines; *api.MachineClient satisfies it.
type MachineCalls interface {
	Reserve(ctx context.Context, machineID string, req api.ReserveRequest) error
	Keyring(ctx context.Context, machineID string) (api.GossipKeyring, error)
	PushKeyring(ctx context.Context, machineID string, k api.GossipKeyring) error
	UpdateSelf(ctx context.Context, machineID string, u api.MachineUpdate) (*record.Machine, error)
	Leave(ctx context.Context, machineID string) (api.LeaveResult, error) // leave.go
}

// Device is the WireGuard device, for the peers membership adds at once
// (a token's temporary peer, a machine just admitted); *tun.Device
// satisfies it. Every other peer change goes through the peer manager.
type Device interface {
	SetPeer(p tun.Peer) error
}

// Gossip is the gossip node as membership uses it; *gossip.Node
// satisfies it.
type Gossip interface {
	SetKeys(keys [][]byte) error
	Join(ctx context.Context, addrs []string) (int, error)
}

// Config is what membership needs from its start: the machine state as
// loaded, and how it reaches the rest of the daemon.
type Config struct {
	DataDir  string
	State    *MachineState
	Identity *api.Identity
	Log      *slog.Logger
	// Ctx is the daemon's lifetime, for work started by calls; Go starts
	// such work so that the daemon waits for it on close. Defaults:
	// context.Background and a plain goroutine.
	Ctx context.Context
	Go  func(func())
	// PokePeers asks the peer manager to re-apply peers now.
	PokePeers func()
	// Endpoints are the underlay endpoints this machine publishes; the
	// default is the configured public address and the interfaces.
	Endpoints func() []netip.AddrPort
	// Reach tells whether this machine can be reached from outside its
	// NAT, and which peers can (reach.go); nil: assume it can.
	Reach func() Reachability
	// GossipPort and MachineAPIPort are on every machine's mesh address.
	GossipPort     uint16
	MachineAPIPort uint16
}

// Parts are the daemon's parts membership calls once they are up.
type Parts struct {
	Records Records
	Calls   MachineCalls
	Device  Device
	Gossip  Gossip
}

// Members is this machine's membership of its network.
type Members struct {
	cfg Config
	log *slog.Logger
	ctx context.Context
	// state is read freely for what never changes (IDs, keys, subnet);
	// Name, Roles and the gossip keys change at runtime, under stateMu,
	// through UpdateState and Snapshot.
	state   *MachineState
	stateMu sync.Mutex

	tokens   *tokenBook
	promises *promiseBook
	known    atomic.Pointer[[]Known]

	// Set once by Attach; attached says they are (the machine API asks
	// who is known while the store is still opening).
	parts    Parts
	attached atomic.Bool

	// Injectable for tests.
	now                func() time.Time
	pullStartupRetry   time.Duration
	pullInterval       time.Duration
	grace              time.Duration
	reserveCallTimeout time.Duration
}

// New loads the tokens and promises this machine keeps in cfg.DataDir.
func New(cfg Config) (*Members, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Ctx == nil {
		cfg.Ctx = context.Background()
	}
	if cfg.Go == nil {
		cfg.Go = func(f func()) { go f() }
	}
	if cfg.PokePeers == nil {
		cfg.PokePeers = func() {}
	}
	if cfg.Endpoints == nil {
		st := cfg.State
		cfg.Endpoints = func() []netip.AddrPort { return CandidateEndpoints(st.PublicIP, st.ListenPort) }
	}
	m := &Members{cfg: cfg, log: cfg.Log, ctx: cfg.Ctx, state: cfg.State, now: time.Now,
		pullStartupRetry: keyringStartupRetry, pullInterval: keyringPullInterval, grace: keyringGrace,
		reserveCallTimeout: 5 * time.Second}
	var err error
	if m.tokens, err = loadTokenBook(cfg.DataDir); err != nil {
		return nil, err
	}
	if m.promises, err = loadPromiseBook(cfg.DataDir, m.now()); err != nil {
		return nil, err
	}
	return m, nil
}

// Attach hands membership the parts that come up after it: from here on
// the records decide who is known.
func (m *Members) Attach(p Parts) {
	m.parts = p
	m.attached.Store(true)
}

// signer signs as this machine.
func (m *Members) signer() *trust.Signer {
	return trust.NewSigner(m.state.MachineID, m.cfg.Identity.PrivateKey())
}

// State is the machine state; only its fixed fields may be read without
// Snapshot.
func (m *Members) State() *MachineState { return m.state }

// Snapshot is a copy of the machine state as it is now.
func (m *Members) Snapshot() MachineState {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return *m.state
}

// UpdateState changes the machine state on disk first, then in memory:
// what the agent acts on has always been saved, so a crash in between
// loses nothing.
func (m *Members) UpdateState(change func(*MachineState) error) (MachineState, error) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	next := *m.state
	next.Roles = slices.Clone(next.Roles)
	next.Labels = maps.Clone(next.Labels)
	next.GossipKeys = slices.Clone(next.GossipKeys)
	if err := change(&next); err != nil {
		return *m.state, err
	}
	if reflect.DeepEqual(next, *m.state) {
		return next, nil // nothing changed: no write
	}
	if err := next.Save(m.cfg.DataDir); err != nil {
		return *m.state, fmt.Errorf("save machine state: %w", err)
	}
	*m.state = next
	return next, nil
}

// Rejoin contacts, in the background, every machine in the records:
// after a restart the seeds of the original join may be long gone, while
// the records name everyone the machine knew.
func (m *Members) Rejoin(ctx context.Context) {
	var addrs []string
	for _, k := range m.Known(ctx) {
		if k.ID != m.state.MachineID {
			addrs = append(addrs, netip.AddrPortFrom(k.Subnet.MachineAddr(), m.cfg.GossipPort).String())
		}
	}
	if len(addrs) == 0 {
		return
	}
	m.cfg.Go(func() {
		if _, err := m.parts.Gossip.Join(ctx, addrs); err != nil && ctx.Err() == nil {
			m.log.Info("no known machine answered yet; gossip keeps retrying", "err", err)
		}
	})
}

// MachineAPIURL maps a machine ID to its machine API base URL.
func (m *Members) MachineAPIURL(machineID string) (string, error) {
	for _, k := range m.Known(context.Background()) {
		if k.ID == machineID {
			return "https://" + net.JoinHostPort(k.Subnet.MachineAddr().String(), strconv.Itoa(int(m.cfg.MachineAPIPort))), nil
		}
	}
	return "", fmt.Errorf("machine %s is not known here yet", machineID)
}

// IdentityByAddr pins the machine API of the machine that owns addr.
func (m *Members) IdentityByAddr(addr netip.Addr) (ed25519.PublicKey, error) {
	for _, k := range m.Known(context.Background()) {
		if k.Subnet.Prefix().Contains(addr) {
			return api.DecodeKey(k.IdentityKey)
		}
	}
	return nil, fmt.Errorf("no known machine owns %v", addr)
}

// AuthorizeMachine accepts identity keys of known machines (api.Authorizer).
func (m *Members) AuthorizeMachine(pub ed25519.PublicKey) (string, error) {
	want := api.EncodeKey(pub)
	for _, k := range m.Known(context.Background()) {
		if k.IdentityKey == want {
			return k.ID, nil
		}
	}
	return "", api.ErrUnknownMachine
}
