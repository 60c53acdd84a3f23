package membership

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Token defaults: one machine, within the hour.
const (
	DefaultTokenTTL  = time.Hour
	DefaultTokenUses = 1
	maxTokenTTL      = 30 * 24 * time.Hour
)

// CreateToken implements api.Backend's: a one-time WireGuard key whose
// public half becomes a temporary peer here, and the token that carries
// its private half. Only the public parts are kept, here and in the state.
func (m *Members) CreateToken(ctx context.Context, req api.TokenRequest) (api.TokenInfo, error) {
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
	if err := m.checkIssuerReachable(ctx, req); err != nil {
		return api.TokenInfo{}, err
	}
	members, err := m.tokenMembers(ctx, 3)
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
	now := m.now()
	issued, err := m.tokens.add(id, secret.PublicKey(), req.TTL, req.Uses, now)
	if err != nil {
		return api.TokenInfo{}, err
	}
	tok := Token{NetworkID: m.state.NetworkID, ID: id, Secret: secret, Slot: issued.Slot,
		Expires: issued.Expires, Members: members}
	text, err := tok.Encode()
	if err != nil {
		return api.TokenInfo{}, err
	}
	// The temporary peer must exist before the token is handed out: a
	// joiner that handshakes first would wait out WireGuard's 5 s retry.
	if err := m.parts.Device.SetPeer(tun.Peer{PublicKey: secret.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(tok.JoinAddress(), 32)}}); err != nil {
		m.tokens.revoke(id)
		return api.TokenInfo{}, fmt.Errorf("install the token's temporary peer: %w", err)
	}
	rec := &record.Token{ID: id, Issuer: m.state.MachineID, PublicKey: secret.PublicKey().String(), Expires: issued.Expires}
	if err := m.parts.Records.Put(ctx, rec.Key(), rec); err != nil {
		m.log.Warn("token record not written to the state", "token", id, "err", err)
	}
	m.cfg.PokePeers()
	info := tokenInfo(*issued, now)
	info.Token = text
	return info, nil
}

// ListTokens implements api.Backend's: the tokens this machine issued.
func (m *Members) ListTokens(ctx context.Context) ([]api.TokenInfo, error) {
	now := m.now()
	var out []api.TokenInfo
	for _, t := range m.tokens.list() {
		out = append(out, tokenInfo(t, now))
	}
	return out, nil
}

// RevokeToken implements api.Backend's.
func (m *Members) RevokeToken(ctx context.Context, id string) error {
	if err := m.tokens.revoke(id); err != nil {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	m.cfg.PokePeers()
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
