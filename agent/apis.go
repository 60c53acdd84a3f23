package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// startMachineAPI serves the machine-to-machine API on the mesh address:
// through WireGuard only, and only to machines whose identity key is in
// the state.
func (d *Daemon) startMachineAPI(ctx context.Context) error {
	addr := net.JoinHostPort(d.state.MeshAddress().String(), strconv.Itoa(MachineAPIPort))
	ln, err := d.dev.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for the machine API on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(crdt.BlocksPath, d.store.BlockHandler())
	mux.HandleFunc("POST "+api.MachinePathReserve, d.handleReserve)
	mux.HandleFunc("POST "+api.MachinePathSelf, d.handleUpdateSelf)
	mux.HandleFunc("GET "+api.MachinePathKeyring, d.handleGetKeyring)
	mux.HandleFunc("POST "+api.MachinePathKeyring, d.handlePushKeyring)
	d.containerRoutes(mux)
	d.goServe("machine API", func() error { return api.ServeMachineAPI(ctx, ln, d.identity, d, mux) })
	d.life.stopAccepting(func() error { return ignoreClosed(ln.Close()) })
	return nil
}

func (d *Daemon) startLocalAPI(ctx context.Context) error {
	ln, err := api.ListenUnix(ctx, d.opts.Socket, d.opts.SocketGID)
	if err != nil {
		return err
	}
	d.goServe("local API", func() error { return api.ServeLocal(ctx, ln, d) })
	d.life.stopAccepting(func() error {
		err := ignoreClosed(ln.Close())
		os.Remove(d.opts.Socket)
		return err
	})
	d.log.Info("local API", "socket", d.opts.Socket)
	return nil
}

func (d *Daemon) goServe(what string, serve func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error(what+" stopped", "err", err)
		}
	}()
}

// Status implements api.Backend.
func (d *Daemon) Status(ctx context.Context) (api.Status, error) {
	self := d.snapshot()
	st := api.Status{
		Version:        d.opts.Version,
		NetworkID:      self.NetworkID,
		MachineID:      self.MachineID,
		Name:           self.Name,
		Address:        self.MeshAddress().String(),
		Mode:           string(d.dev.Mode()),
		Port:           self.ListenPort,
		Roles:          self.Roles,
		GossipKey:      keyFingerprint(self.GossipKeys[0]),
		GossipKeyEpoch: self.GossipKeyEpoch,
	}
	peers, err := d.dev.Peers()
	if err != nil {
		return st, err
	}
	names := d.machineNamesBySubnet(ctx)
	for _, p := range peers {
		ps := api.PeerStatus{
			PublicKey:     p.PublicKey.String(),
			LastHandshake: p.LastHandshake,
			RxBytes:       p.RxBytes,
			TxBytes:       p.TxBytes,
		}
		if p.Endpoint.IsValid() {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			ps.AllowedIPs = append(ps.AllowedIPs, a.String())
			if n, ok := names[a]; ok {
				ps.Machine = n
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}

func (d *Daemon) machineNamesBySubnet(ctx context.Context) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	recs, err := d.store.List(ctx, record.MachinesPrefix)
	if err != nil {
		return out
	}
	for _, r := range recs {
		if m, ok := r.(*record.Machine); ok {
			if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil {
				out[n.Prefix()] = m.Name
			}
		}
	}
	return out
}

// StateList implements api.Backend.
func (d *Daemon) StateList(ctx context.Context, prefix string) ([]api.StateEntry, error) {
	if !strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("%w: prefix %q must start with /", api.ErrBadRequest, prefix)
	}
	recs, err := d.store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.StateEntry, 0, len(recs))
	for _, r := range recs {
		e, err := stateEntry(r)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// StateGet implements api.Backend.
func (d *Daemon) StateGet(ctx context.Context, key string) (api.StateEntry, error) {
	if !strings.HasPrefix(key, "/") {
		return api.StateEntry{}, fmt.Errorf("%w: key %q must start with /", api.ErrBadRequest, key)
	}
	r, err := d.store.Get(ctx, key)
	if errors.Is(err, crdt.ErrNotFound) {
		return api.StateEntry{}, fmt.Errorf("%w: no record at %s", api.ErrNotFound, key)
	}
	if errors.Is(err, record.ErrBadKey) {
		return api.StateEntry{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if err != nil {
		return api.StateEntry{}, err
	}
	return stateEntry(r)
}

func stateEntry(r crdt.Record) (api.StateEntry, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return api.StateEntry{}, fmt.Errorf("encode record %s: %w", r.Key(), err)
	}
	return api.StateEntry{Key: r.Key(), Value: b}, nil
}

// ignoreClosed treats closing an already closed listener as success: the
// server's own shutdown closes it first.
func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Token defaults: one machine, within the hour.
const (
	DefaultTokenTTL  = time.Hour
	DefaultTokenUses = 1
	maxTokenTTL      = 30 * 24 * time.Hour
)

// CreateToken implements api.Backend: a one-time WireGuard key whose
// public half becomes a temporary peer here, and the token that carries
// its private half. Only the public parts are kept, here and in the state.
func (d *Daemon) CreateToken(ctx context.Context, req api.TokenRequest) (api.TokenInfo, error) {
	if req.TTL == 0 {
		req.TTL = DefaultTokenTTL
	}
	if req.Uses == 0 {
		req.Uses = DefaultTokenUses
	}
	if req.TTL < time.Minute || req.TTL > maxTokenTTL {
		return api.TokenInfo{}, fmt.Errorf("%w: ttl %v is outside 1m..%v", api.ErrBadRequest, req.TTL, maxTokenTTL)
	}
	if req.Uses < 1 || req.Uses > 1000 {
		return api.TokenInfo{}, fmt.Errorf("%w: uses %d is outside 1..1000", api.ErrBadRequest, req.Uses)
	}
	members, err := d.tokenMembers(ctx, 3)
	if err != nil {
		return api.TokenInfo{}, err
	}
	if len(members[0].Endpoints) == 0 {
		return api.TokenInfo{}, fmt.Errorf("this machine has no address others could reach it at: restart the agent with a public address (init --public-ip)")
	}
	secret, err := tun.GeneratePrivateKey()
	if err != nil {
		return api.TokenInfo{}, err
	}
	id, err := randomID(6)
	if err != nil {
		return api.TokenInfo{}, err
	}
	now := time.Now()
	issued, err := d.tokens.add(id, secret.PublicKey(), req.TTL, req.Uses, now)
	if err != nil {
		return api.TokenInfo{}, err
	}
	tok := Token{NetworkID: d.state.NetworkID, ID: id, Secret: secret, Slot: issued.Slot,
		Expires: issued.Expires, Members: members}
	text, err := tok.Encode()
	if err != nil {
		return api.TokenInfo{}, err
	}
	// The temporary peer must exist before the token is handed out: a
	// joiner that handshakes first would wait out WireGuard's 5 s retry.
	if err := d.dev.SetPeer(tun.Peer{PublicKey: secret.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(tok.JoinAddress(), 32)}}); err != nil {
		d.tokens.revoke(id)
		return api.TokenInfo{}, fmt.Errorf("install the token's temporary peer: %w", err)
	}
	rec := &record.Token{ID: id, Issuer: d.state.MachineID, PublicKey: secret.PublicKey().String(), Expires: issued.Expires}
	if err := d.store.Put(ctx, rec.Key(), rec); err != nil {
		d.log.Warn("token record not written to the state", "token", id, "err", err)
	}
	d.pokePeers()
	info := tokenInfo(*issued, now)
	info.Token = text
	return info, nil
}

// ListTokens implements api.Backend: the tokens this machine issued.
func (d *Daemon) ListTokens(ctx context.Context) ([]api.TokenInfo, error) {
	now := time.Now()
	var out []api.TokenInfo
	for _, t := range d.tokens.list() {
		out = append(out, tokenInfo(t, now))
	}
	return out, nil
}

// RevokeToken implements api.Backend.
func (d *Daemon) RevokeToken(ctx context.Context, id string) error {
	if err := d.tokens.revoke(id); err != nil {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	d.pokePeers()
	return nil
}

func tokenInfo(t IssuedToken, now time.Time) api.TokenInfo {
	state := "usable"
	switch {
	case t.Revoked:
		state = "revoked"
	case t.UsesLeft <= 0:
		state = "used"
	case !now.Before(t.Expires):
		state = "expired"
	}
	return api.TokenInfo{ID: t.ID, Created: t.Created, Expires: t.Expires, UsesLeft: t.UsesLeft, State: state}
}
