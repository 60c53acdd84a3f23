package membership

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// tokenPrefix makes a token recognisable and versions its encoding.
const tokenPrefix = "uncloud-join-v1."

// maxTokenLen bounds what is decoded from untrusted input.
const maxTokenLen = 8 << 10

// Token is what `uncloud token` prints and `uncloud join` consumes. Its
// secret is a one-time WireGuard private key: the issuer holds only the
// public half, as a temporary peer that can reach nothing but the join
// call, so the joiner proves the secret by completing a WireGuard
// handshake with the issuer, whose key the token pins.
type Token struct {
	NetworkID string    `json:"net"`
	ID        string    `json:"id"`
	Secret    tun.Key   `json:"secret"`
	Slot      int       `json:"slot"` // the joiner is meshaddr.JoinAddr(slot) until it has a subnet
	Expires   time.Time `json:"exp"`
	// Members are the issuer first, then a few other machines to gossip
	// with once joined.
	Members []TokenMember `json:"members"`
}

// TokenMember is how to reach one machine of the network.
type TokenMember struct {
	Name         string           `json:"name"`
	MachineID    string           `json:"id,omitempty"`
	IdentityKey  string           `json:"identity,omitempty"`
	WireGuardKey tun.Key          `json:"wg"`
	Subnet       meshaddr.Subnet  `json:"subnet"`
	Endpoints    []netip.AddrPort `json:"eps"`
}

// JoinAddress is the joiner's temporary mesh address.
func (t *Token) JoinAddress() netip.Addr {
	return meshaddr.JoinAddr(uint8(t.Slot))
}

// Encode returns the copy-pasteable form.
func (t *Token) Encode() (string, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// ErrBadToken wraps every reason a token string is unusable.
var ErrBadToken = errors.New("bad join token")

// ParseToken decodes and checks a token string, saying what is wrong with
// it in terms a person who pasted it can act on.
func ParseToken(s string, now time.Time) (*Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d characters is far longer than a token", ErrBadToken, len(s))
	}
	if !strings.HasPrefix(s, tokenPrefix) {
		if strings.HasPrefix(s, "uncloud-join-") {
			return nil, fmt.Errorf("%w: token version %q is not supported by this uncloud (want %q)", ErrBadToken, strings.SplitN(s, ".", 2)[0], strings.TrimSuffix(tokenPrefix, "."))
		}
		return nil, fmt.Errorf("%w: it does not start with %q; copy the whole line 'uncloud token' printed", ErrBadToken, tokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, tokenPrefix))
	if err != nil {
		return nil, fmt.Errorf("%w: it is damaged or cut short (%v)", ErrBadToken, err)
	}
	var t Token
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%w: it is damaged or cut short (%v)", ErrBadToken, err)
	}
	if err := t.check(now); err != nil {
		return nil, err
	}
	return &t, nil
}

func (t *Token) check(now time.Time) error {
	switch {
	case t.NetworkID == "" || t.ID == "":
		return fmt.Errorf("%w: no network or token id", ErrBadToken)
	case t.Secret.IsZero():
		return fmt.Errorf("%w: no secret", ErrBadToken)
	case t.Slot < 2 || t.Slot > 254:
		return fmt.Errorf("%w: join slot %d out of range", ErrBadToken, t.Slot)
	case len(t.Members) == 0:
		return fmt.Errorf("%w: names no machine to join through", ErrBadToken)
	case !now.Before(t.Expires):
		return fmt.Errorf("%w: it expired at %s; ask for a new one with 'uncloud token'", ErrBadToken, t.Expires.Format(time.RFC3339))
	}
	for _, m := range t.Members {
		if m.WireGuardKey.IsZero() || !m.Subnet.Valid() {
			return fmt.Errorf("%w: member %q has no key or a bad subnet", ErrBadToken, m.Name)
		}
	}
	if len(t.Members[0].Endpoints) == 0 {
		return fmt.Errorf("%w: the issuing machine %q published no endpoint; give it one with 'uncloud init --public-ip'", ErrBadToken, t.Members[0].Name)
	}
	return nil
}
