package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Config configures a Node. Name, BindAddr and Keys are required.
type Config struct {
	Name           string         // unique machine name (memberlist node name); no '/', at most 255 bytes
	BindAddr       netip.AddrPort // the mesh address in production, 127.0.0.x:port in tests; port 0 = pick a free one
	AdvertiseAddr  netip.AddrPort // zero = BindAddr (a zero port = the bound port)
	Keys           [][]byte       // AES keys (16/24/32 bytes); Keys[0] encrypts, all decrypt; required
	Meta           []byte         // machine metadata, at most MaxMetaSize bytes; changeable with SetMeta
	Seeds          []string       // "host:port" to join on start and re-join on a timer
	RejoinInterval time.Duration  // default 30s
	Logger         *slog.Logger   // default: discard
	// Network holds gossip's sockets when they cannot be host sockets (a
	// machine in netstack mode); nil uses the host's, with memberlist's
	// own tuned transport. With a Network, BindAddr needs a port.
	Network Network

	// timing overrides the production timings; tests only.
	timing *timing
	// wrapTransport lets a test put a fault injector (partition, packet
	// capture) between memberlist and the network; tests only.
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

const (
	// MaxMetaSize is memberlist's limit on node metadata.
	MaxMetaSize = memberlist.MetaMaxSize

	// MaxWirePacket is the largest UDP payload gossip puts on the wire.
	// Gossip runs on mesh addresses (IPv4) inside the tunnel, and two
	// machines may have different tunnel MTUs (each follows its own
	// underlay), so the budget is the smallest tunnel MTU any machine may
	// have minus the IPv4 and UDP headers: 1156 - 28 = 1128. No gossip
	// datagram fragments on any pair, whatever their underlays.
	MaxWirePacket = meshaddr.MaxUDPPayload

	// MaxPayload bounds one message's payload. Large payloads travel over a
	// stream whose receiver must read them within the stream timeout, and
	// memberlist allocates the announced length up front: keep them modest.
	MaxPayload = 4 << 20

	// MaxTopicLen and MaxKeyLen bound the envelope's strings.
	MaxTopicLen = 32
	MaxKeyLen   = 255
	maxNameLen  = 255

	defaultRejoinInterval = 30 * time.Second
)

// Packet budget. memberlist budgets UDPBufferSize for a packet's contents
// (encryption and compound headers included) but adds its 5-byte CRC header
// on top, so the buffer size is the wire limit minus the CRC.
const (
	crcOverhead        = 5  // hasCrcMsg type byte + CRC32, added for protocol ≥ 5 peers
	encryptOverhead    = 29 // AES-GCM v1: version byte + 12-byte nonce + 16-byte tag
	compoundHeaderSize = 2  // memberlist's compound header budget
	compoundEntrySize  = 2  // per-part length in a compound message
	userMsgTypeSize    = 1  // the userMsg type byte memberlist prepends
	udpBufferSize      = MaxWirePacket - crcOverhead

	// maxPacketMsg is the largest envelope that rides a single packet both
	// ways memberlist sends it: piggybacked on gossip (budget: buffer −
	// compound header − encryption − compound entry − user type byte) and
	// straight to a member with SendBestEffort (which needs only
	// MaxWirePacket − encryption − CRC − type byte = 1093). The smaller wins.
	maxPacketMsg = udpBufferSize - compoundHeaderSize - encryptOverhead - compoundEntrySize - userMsgTypeSize
)

// timing holds every interval this package sets. production() is the WAN
// mesh; tests use a fast one.
type timing struct {
	probeInterval       time.Duration
	probeTimeout        time.Duration
	suspicionMult       int
	suspicionMaxMult    int
	gossipInterval      time.Duration
	gossipNodes         int
	pushPullInterval    time.Duration
	tcpTimeout          time.Duration
	gossipToTheDeadTime time.Duration
	leaveTimeout        time.Duration
	forgetAfter         time.Duration // a member dead or left this long is no longer re-joined
}

// production returns the timings for a WAN mesh of 2–200 machines, some of
// them Raspberry Pis on home uplinks, all talking inside WireGuard.
//
// Starting point is memberlist.DefaultWANConfig (probe 5 s / timeout 3 s,
// suspicion ×6, gossip 500 ms to 4 nodes, push/pull 60 s, TCP 30 s):
func production() timing {
	return timing{
		// A probe every 2 s with a 1 s timeout: a 1 s ack covers a relayed
		// intercontinental path (≈300–600 ms) plus a Pi's GC pause; the
		// remaining second is for indirect probes and the TCP fallback.
		// Each probe is two ~100-byte packets, so 2 s costs nothing, and a
		// dead machine is noticed within ≈ one interval (every machine probes
		// a different member each round). DNS answers (TTL 5 s) depend on it.
		probeInterval: 2 * time.Second,
		probeTimeout:  time.Second,
		// Suspicion 4 × max(1, log10 N) × 2 s = 8 s up to 10 machines,
		// ≈10 s at 20: long enough for a suspect behind a slow link to
		// refute, short enough that a dead machine's services leave DNS in
		// ≈ 10–15 s total. The ×6 ceiling only applies when nobody confirms.
		suspicionMult:    4,
		suspicionMaxMult: 6,
		// memberlist only sends gossip when something is queued, so a fast
		// interval is free when idle and makes relayed broadcasts and
		// membership changes spread in a few hundred ms when busy.
		gossipInterval: 200 * time.Millisecond,
		gossipNodes:    3,
		// Push/pull is the anti-entropy carrier (member list + every
		// topic's LocalState) over one TCP connection to a random member.
		// 20 s bounds how long a lost broadcast stays unnoticed while
		// costing one small TCP exchange per machine per 20 s (memberlist
		// scales it up beyond 32 machines by itself).
		pushPullInterval: 20 * time.Second,
		// Dial timeout for streams and the deadline a receiver gives a
		// whole stream message. 10 s instead of 30 s so a rejoin attempt
		// against a machine that is still down does not hold a worker for
		// half a minute; a stream payload must transfer within it.
		tcpTimeout: 10 * time.Second,
		// Keep gossiping to a dead machine for a minute so it can refute
		// a false death after a short outage (WAN default).
		gossipToTheDeadTime: 60 * time.Second,
		leaveTimeout:        5 * time.Second,
		// A machine away for three days is presumed gone for good; its
		// removal (DESIGN §4) normally makes it Leave long before that.
		forgetAfter: 72 * time.Hour,
	}
}

// validate checks cfg and fills defaults; it returns the effective copy.
func (cfg Config) validate() (Config, error) {
	if cfg.Name == "" {
		return cfg, errors.New("gossip: config: Name is required")
	}
	if len(cfg.Name) > maxNameLen || strings.ContainsAny(cfg.Name, "/\x00") {
		return cfg, fmt.Errorf("gossip: config: Name %q: at most %d bytes, no '/' or NUL", cfg.Name, maxNameLen)
	}
	if !cfg.BindAddr.Addr().IsValid() {
		return cfg, fmt.Errorf("gossip: config: BindAddr %q is not a valid address", cfg.BindAddr)
	}
	if len(cfg.Keys) == 0 {
		return cfg, errors.New("gossip: config: Keys: at least one key is required (gossip is always encrypted)")
	}
	for i, k := range cfg.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return cfg, fmt.Errorf("gossip: config: Keys[%d] (%d bytes): %w", i, len(k), err)
		}
	}
	if len(cfg.Meta) > MaxMetaSize {
		return cfg, fmt.Errorf("gossip: config: Meta is %d bytes, limit %d", len(cfg.Meta), MaxMetaSize)
	}
	if cfg.RejoinInterval < 0 {
		return cfg, fmt.Errorf("gossip: config: RejoinInterval %v is negative", cfg.RejoinInterval)
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = defaultRejoinInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Meta = clone(cfg.Meta)
	keys := make([][]byte, len(cfg.Keys))
	for i, k := range cfg.Keys {
		keys[i] = clone(k) // the caller may wipe its copy
	}
	cfg.Keys = keys
	cfg.Seeds = append([]string(nil), cfg.Seeds...)
	return cfg, nil
}

// memberlistConfig builds memberlist's configuration from cfg and t.
func memberlistConfig(cfg Config, t timing) *memberlist.Config {
	c := memberlist.DefaultWANConfig()
	c.Name = cfg.Name
	c.BindAddr = cfg.BindAddr.Addr().String()
	c.BindPort = int(cfg.BindAddr.Port())
	if cfg.AdvertiseAddr.Addr().IsValid() {
		c.AdvertiseAddr = cfg.AdvertiseAddr.Addr().String()
		c.AdvertisePort = int(cfg.AdvertiseAddr.Port())
	}
	// Version 5 adds the per-packet CRC and nacks; every machine runs
	// this same binary, so there is no older peer to stay compatible with.
	c.ProtocolVersion = memberlist.ProtocolVersionMax
	c.ProbeInterval = t.probeInterval
	c.ProbeTimeout = t.probeTimeout
	c.SuspicionMult = t.suspicionMult
	c.SuspicionMaxTimeoutMult = t.suspicionMaxMult
	c.GossipInterval = t.gossipInterval
	c.GossipNodes = t.gossipNodes
	c.PushPullInterval = t.pushPullInterval
	c.TCPTimeout = t.tcpTimeout
	c.GossipToTheDeadTime = t.gossipToTheDeadTime
	c.UDPBufferSize = udpBufferSize
	// No LZW compression: messages are small and already inside WireGuard,
	// and each compressed packet allocates a fresh ~70 KB LZW table. With
	// 20 machines that garbage alone kept an idle agent's GC busy.
	c.EnableCompression = false
	// Gossip is always encrypted, in and out: a container on the mesh must
	// not be able to inject membership or messages (DESIGN §11).
	c.GossipVerifyIncoming = true
	c.GossipVerifyOutgoing = true
	return c
}

// testTiming is fast enough for loopback tests on a busy shared machine.
func testTiming() *timing {
	return &timing{
		probeInterval:       200 * time.Millisecond,
		probeTimeout:        100 * time.Millisecond,
		suspicionMult:       2,
		suspicionMaxMult:    4,
		gossipInterval:      20 * time.Millisecond,
		gossipNodes:         3,
		pushPullInterval:    500 * time.Millisecond,
		tcpTimeout:          time.Second,
		gossipToTheDeadTime: 2 * time.Second,
		leaveTimeout:        2 * time.Second,
		forgetAfter:         time.Minute,
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
