package record

import (
	"fmt"
	"strings"
	"time"
)

// Membership is the statement that admits a machine: the issuing member
// signs who the machine is (its ID and both public keys), where it lives
// (its subnet) and in which network, at join time. The network's first
// machine signs its own, with the key every member holds as the network's
// root. A machine record is believed only with a membership that verifies
// (package trust checks the chain), so a member cannot invent machines or
// rewrite another's keys or subnet by writing records.
type Membership struct {
	Network      string    `json:"network"`
	ID           string    `json:"id"`
	IdentityKey  string    `json:"identity_key"`
	WireGuardKey string    `json:"wireguard_key"`
	Subnet       string    `json:"subnet"`
	Issuer       string    `json:"issuer"` // machine ID of the signer; ID itself for the root
	At           time.Time `json:"at"`
	Sig          []byte    `json:"sig"`
}

// Message is what the issuer signs: every field but the signature, one per
// line, under a domain prefix so the bytes mean nothing in another context.
// Fields may not contain a newline (Check refuses them), so the encoding
// is unambiguous.
func (m *Membership) Message() []byte {
	return []byte(strings.Join([]string{"uncloud membership v1", m.Network, m.ID, m.IdentityKey,
		m.WireGuardKey, m.Subnet, m.Issuer, m.At.UTC().Format(time.RFC3339Nano)}, "\n"))
}

// Check rejects a statement whose fields would make Message ambiguous or
// that is missing a part.
func (m *Membership) Check() error {
	for name, v := range map[string]string{"network": m.Network, "id": m.ID, "identity key": m.IdentityKey,
		"wireguard key": m.WireGuardKey, "subnet": m.Subnet, "issuer": m.Issuer} {
		if v == "" || strings.ContainsAny(v, "\n\x00") || len(v) > 256 {
			return fmt.Errorf("%w: membership %s %q", ErrBadRecord, name, v)
		}
	}
	if len(m.Sig) == 0 || len(m.Sig) > 128 {
		return fmt.Errorf("%w: membership of %s has no valid signature", ErrBadRecord, m.ID)
	}
	return nil
}

// Matches says whether the statement admits exactly what the machine
// record claims.
func (m *Membership) Matches(r *Machine) bool {
	return m.ID == r.ID && m.IdentityKey == r.IdentityKey && m.WireGuardKey == r.WireGuardKey && m.Subnet == r.Subnet
}
