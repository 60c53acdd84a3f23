package membership

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
	"github.com/uncloud-mesh/uncloud/tun"
)

// joinRequest is what a joining machine sends through its temporary
// WireGuard peer. It carries only public keys: the new machine's secrets
// never leave it.
type joinRequest struct {
	NetworkID    string   `json:"network_id"`
	MachineID    string   `json:"machine_id"`
	Name         string   `json:"name"`
	WireGuardKey tun.Key  `json:"wireguard_key"`
	IdentityKey  string   `json:"identity_key"`
	Endpoints    []string `json:"endpoints,omitempty"`
}

// joinResponse admits the machine: its subnet, the gossip keys and whom to
// talk to first.
type joinResponse struct {
	NetworkID      string          `json:"network_id"`
	Subnet         meshaddr.Subnet `json:"subnet"`
	GossipKeys     [][]byte        `json:"gossip_keys"`
	GossipKeyEpoch uint64          `json:"gossip_key_epoch,omitempty"`
	Members        []TokenMember   `json:"members"`
	// RootKey is the network's root key; Membership is the issuer's
	// signed statement admitting the new machine (package trust).
	RootKey    string             `json:"root_key"`
	Membership *record.Membership `json:"membership"`
}

func joinError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}

// HandleJoin is the join call (POST api.JoinPath) on the mesh address.
// Only packets from the join range reach it (tun's join filter lets them
// reach nothing else), and it answers only them.
func (m *Members) HandleJoin(w http.ResponseWriter, r *http.Request) {
	now := m.now()
	src, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !meshaddr.Join().Contains(src.Addr()) {
		joinError(w, http.StatusForbidden, "joins come only through a token's temporary peer")
		return
	}
	tok, ok := m.tokens.bySlot(int(src.Addr().As4()[3]))
	if !ok {
		joinError(w, http.StatusForbidden, "this token is not outstanding on %s", m.Snapshot().Name)
		return
	}
	if err := tok.usable(now); err != nil {
		joinError(w, tokenErrorStatus(err), "%v", err)
		return
	}
	var req joinRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		joinError(w, http.StatusBadRequest, "malformed join request: %v", err)
		return
	}
	if status, err := m.checkJoinRequest(r.Context(), req); err != nil {
		joinError(w, status, "%v", err)
		return
	}
	pending, subnet, status, err := m.admit(r.Context(), tok.ID, req, now)
	if err != nil {
		joinError(w, status, "%v", err)
		return
	}
	// Fields were checked above, so signing cannot fail on them; the
	// use stays spent if it does, which is the safe direction.
	membership, err := m.signer().Issue(record.Membership{Network: m.state.NetworkID, ID: req.MachineID,
		IdentityKey: req.IdentityKey, WireGuardKey: req.WireGuardKey.String(), Subnet: subnet.String()}, now)
	if err != nil {
		joinError(w, http.StatusBadRequest, "%v", err)
		return
	}
	members, err := m.tokenMembers(r.Context(), -1)
	if err != nil {
		joinError(w, http.StatusInternalServerError, "list members: %v", err)
		return
	}
	// The new machine is a peer before it gets the answer, so its first
	// packets on its real key find us ready.
	newPeer := tun.Peer{PublicKey: req.WireGuardKey, AllowedIPs: []netip.Prefix{pending.Subnet}, PersistentKeepalive: tun.DefaultKeepalive}
	if eps := pending.Endpoints; len(eps) > 0 {
		newPeer.Endpoint = eps[0]
	}
	if err := m.parts.Device.SetPeer(newPeer); err != nil {
		m.log.Warn("new machine not added as a peer yet", "name", req.Name, "err", err)
	}
	st := m.Snapshot()
	resp := joinResponse{NetworkID: st.NetworkID, Subnet: subnet, GossipKeys: st.GossipKeys, GossipKeyEpoch: st.GossipKeyEpoch, Members: members,
		RootKey: st.RootKey, Membership: membership}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
	m.log.Info("machine joined", "name", req.Name, "id", req.MachineID, "subnet", subnet, "token", tok.ID)
	// Now: the new machine must be known to the machine API at once.
	m.cfg.PokePeers()
}

// checkJoinRequest refuses anything that would clash with the network.
func (m *Members) checkJoinRequest(ctx context.Context, req joinRequest) (int, error) {
	if req.NetworkID != m.state.NetworkID {
		return http.StatusBadRequest, fmt.Errorf("the token is for network %s, this machine is in %s", req.NetworkID, m.state.NetworkID)
	}
	if err := ValidateName(req.Name); err != nil {
		return http.StatusBadRequest, err
	}
	if req.MachineID == "" || req.WireGuardKey.IsZero() {
		return http.StatusBadRequest, errors.New("join request lacks machine id or WireGuard key")
	}
	if _, err := api.DecodeKey(req.IdentityKey); err != nil {
		return http.StatusBadRequest, err
	}
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return http.StatusInternalServerError, err
	}
	for _, mr := range machines {
		switch {
		case mr.Name == req.Name:
			return http.StatusConflict, fmt.Errorf("machine name %q is taken; choose another with --name", req.Name)
		case mr.ID == req.MachineID || mr.WireGuardKey == req.WireGuardKey.String() || mr.IdentityKey == req.IdentityKey:
			return http.StatusConflict, errors.New("a machine with this id or key is already in the network")
		}
	}
	_, pending := m.tokens.peers(m.now())
	for _, p := range pending {
		if p.Name == req.Name {
			return http.StatusConflict, fmt.Errorf("machine name %q was just given to another joining machine; choose another with --name", req.Name)
		}
	}
	return 0, nil
}

// tokenMembers lists this machine first, then up to limit others (all
// with limit < 0), with the endpoints they published.
func (m *Members) tokenMembers(ctx context.Context, limit int) ([]TokenMember, error) {
	self := TokenMember{Name: m.Snapshot().Name, MachineID: m.state.MachineID, IdentityKey: api.EncodeKey(m.cfg.Identity.PublicKey()),
		WireGuardKey: m.state.WireGuardKey.PublicKey(), Subnet: m.state.Subnet, Endpoints: m.cfg.Endpoints()}
	out := []TokenMember{self}
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, mr := range machines {
		if limit >= 0 && len(out) > limit {
			break
		}
		if mr.ID == m.state.MachineID {
			continue
		}
		key, err := tun.ParseKey(mr.WireGuardKey)
		n, nerr := meshaddr.ParseSubnet(mr.Subnet)
		if err != nil || nerr != nil {
			continue
		}
		out = append(out, TokenMember{Name: mr.Name, MachineID: mr.ID, IdentityKey: mr.IdentityKey, WireGuardKey: key,
			Subnet: n, Endpoints: ParseEndpoints(mr.Endpoints)})
	}
	return out, nil
}

// JoinOptions are the choices of `uncloud join`.
type JoinOptions struct {
	Name       string
	DataDir    string
	ListenPort uint16
	PublicIP   netip.Addr
	Logger     *slog.Logger
	// Timeout bounds the whole join call (default 30 s).
	Timeout time.Duration
}

// Join admits this machine into the network a token names: it handshakes
// with the issuer using the token's one-time key, sends its new public
// keys, and saves the answer as its machine state. The agent then starts
// from that state as after init.
func Join(ctx context.Context, tokenText string, opts JoinOptions) (*MachineState, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.ListenPort == 0 {
		opts.ListenPort = tun.DefaultListenPort
	}
	tok, err := ParseToken(tokenText, time.Now())
	if err != nil {
		return nil, err
	}
	// Phase marks for the join's timeline (e2e TestJoinOrder reads them).
	opts.Logger.Debug("join: token read", "issuer", tok.Members[0].Name)
	if existing, err := LoadMachineState(opts.DataDir); err == nil {
		return nil, fmt.Errorf("this machine is already %q in network %s (data dir %s): remove it first to join another", existing.Name, existing.NetworkID, opts.DataDir)
	} else if !errors.Is(err, ErrNotInitialized) {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = DefaultName()
	}
	if err := ValidateName(opts.Name); err != nil {
		return nil, err
	}
	st, err := NewNetwork(InitOptions{Name: opts.Name, PublicIP: opts.PublicIP, ListenPort: opts.ListenPort})
	if err != nil {
		return nil, err
	}
	st.NetworkID = tok.NetworkID

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	resp, err := callJoin(ctx, tok, st, opts)
	if err != nil {
		return nil, err
	}
	opts.Logger.Debug("join: admitted", "issuer", tok.Members[0].Name, "subnet", resp.Subnet)
	if resp.NetworkID != tok.NetworkID || !resp.Subnet.Valid() || len(resp.GossipKeys) == 0 {
		return nil, fmt.Errorf("the issuer's answer is inconsistent (network %s, subnet %d)", resp.NetworkID, resp.Subnet)
	}
	st.Subnet = resp.Subnet
	if err := checkAdmission(st, tok.Members[0], resp); err != nil {
		return nil, err
	}
	st.RootKey, st.Membership = resp.RootKey, resp.Membership
	st.GossipKeys, st.GossipKeyEpoch = resp.GossipKeys, resp.GossipKeyEpoch
	for _, m := range resp.Members {
		st.Seeds = append(st.Seeds, Seed{Name: m.Name, MachineID: m.MachineID, IdentityKey: m.IdentityKey,
			WireGuardKey: m.WireGuardKey, Address: m.Subnet.MachineAddr(), Subnet: m.Subnet.Prefix(), Endpoints: m.Endpoints})
	}
	if err := st.Save(opts.DataDir); err != nil {
		return nil, err
	}
	return st, nil
}

// callJoin brings up a temporary userspace device with the token's key,
// so it needs no privileges and leaves nothing behind, and makes the call
// through it, trying the issuer's endpoints in turn.
func callJoin(ctx context.Context, tok *Token, st *MachineState, opts JoinOptions) (*joinResponse, error) {
	issuer := tok.Members[0]
	dev, err := tun.Open(ctx, tun.Config{
		PrivateKey: tok.Secret,
		Address:    tok.JoinAddress(),
		ListenPort: opts.ListenPort,
		Userspace:  true,
		Joining:    true,
		// The user sees the join's own progress; the temporary device's
		// info lines are internal, only its warnings are theirs.
		Logger: slog.New(atLeast{opts.Logger.Handler(), slog.LevelWarn}),
	})
	if err != nil {
		return nil, fmt.Errorf("temporary join device: %w", err)
	}
	defer dev.Close()
	identity, err := api.NewIdentity(st.IdentitySeed)
	if err != nil {
		return nil, err
	}
	req := joinRequest{
		NetworkID: tok.NetworkID, MachineID: st.MachineID, Name: st.Name,
		WireGuardKey: st.WireGuardKey.PublicKey(), IdentityKey: api.EncodeKey(identity.PublicKey()),
		Endpoints: EndpointStrings(CandidateEndpoints(st.PublicIP, st.ListenPort)),
	}
	target := net.JoinHostPort(issuer.Subnet.MachineAddr().String(), strconv.Itoa(tun.DefaultJoinPort))
	client := &http.Client{Transport: &http.Transport{DialContext: dev.DialContext, DisableKeepAlives: true}}
	var lastErr error
	for _, ep := range issuer.Endpoints {
		peer := tun.Peer{PublicKey: issuer.WireGuardKey, Endpoint: ep,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(issuer.Subnet.MachineAddr(), 32)}}
		if err := dev.SetPeer(peer); err != nil {
			return nil, err
		}
		// Long enough for one WireGuard handshake retry (5 s) to succeed.
		attempt, cancel := context.WithTimeout(ctx, 12*time.Second)
		var resp joinResponse
		err := callJoinOnce(attempt, client, target, req, &resp)
		cancel()
		if err == nil {
			// The call's connection closes, and the issuer hears a last
			// keepalive, before the device does: otherwise the issuer
			// retransmits an unacknowledged FIN to this temporary key, or
			// restarts WireGuard's handshake with it 15 s after its own
			// last packet, and retries for 90 s (tun.Device.Quiesce). A
			// round trip or two; past a second the join goes on regardless.
			settle, cancel := context.WithTimeout(ctx, time.Second)
			if err := dev.Quiesce(settle, issuer.WireGuardKey); err != nil {
				opts.Logger.Debug("join call's connection not closed cleanly", "err", err)
			}
			cancel()
			return &resp, nil
		}
		var refused *api.JoinRefusedError
		if errors.As(err, &refused) {
			return nil, err // the issuer answered: another endpoint will say the same
		}
		lastErr = fmt.Errorf("via %v: %w", ep, err)
		if ctx.Err() != nil {
			break
		}
	}
	// A used, revoked or expired token is answered (410): no answer at all
	// means the issuer is not reachable from here.
	return nil, fmt.Errorf("no answer from %s (%s) at any of its endpoints %v: its WireGuard port is not reachable from here or its agent is down; ask a machine of the network that this one can reach for a token (last error: %w)",
		issuer.Name, issuer.Subnet.MachineAddr(), issuer.Endpoints, lastErr)
}

// checkAdmission makes sure the issuer's membership admits exactly this
// machine and verifies under the issuer's key, which the token pinned:
// a machine must not start with a record every other machine would ignore.
func checkAdmission(st *MachineState, issuer TokenMember, resp *joinResponse) error {
	ms := resp.Membership
	if ms == nil || resp.RootKey == "" {
		return errors.New("the issuer's answer has no membership: it runs an uncloud without signed membership; upgrade it first")
	}
	want := st.membershipSubject()
	if err := ms.Check(); err != nil {
		return fmt.Errorf("the issuer's membership is malformed: %w", err)
	}
	if ms.Network != want.Network || ms.ID != want.ID || ms.IdentityKey != want.IdentityKey ||
		ms.WireGuardKey != want.WireGuardKey || ms.Subnet != want.Subnet || ms.Issuer != issuer.MachineID {
		return errors.New("the issuer's membership does not name this machine as it asked to join")
	}
	key, err := trust.DecodeKey(issuer.IdentityKey)
	if err != nil {
		return fmt.Errorf("the token's issuer: %w", err)
	}
	if !ed25519.Verify(key, ms.Message(), ms.Sig) {
		return errors.New("the issuer's membership signature does not verify under the key the token names")
	}
	if _, err := trust.DecodeKey(resp.RootKey); err != nil {
		return fmt.Errorf("the network's root key: %w", err)
	}
	return nil
}

// atLeast passes on the records of min and above.
type atLeast struct {
	slog.Handler
	min slog.Level
}

func (h atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h atLeast) WithAttrs(as []slog.Attr) slog.Handler {
	return atLeast{h.Handler.WithAttrs(as), h.min}
}
func (h atLeast) WithGroup(g string) slog.Handler { return atLeast{h.Handler.WithGroup(g), h.min} }
