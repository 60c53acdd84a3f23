package membership

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
	"github.com/uncloud-mesh/uncloud/tun"
)

// nameRE is an RFC 1123 DNS label: names become <name>.machine.internal.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName checks a machine name before it is used anywhere.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("machine name %q is not a DNS label: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'", name)
	}
	return nil
}

// DefaultName derives a machine name from the host name.
func DefaultName() string {
	h, err := os.Hostname()
	if err != nil {
		return "machine-1"
	}
	h = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	h = regexp.MustCompile(`[^a-z0-9-]+`).ReplaceAllString(h, "-")
	h = strings.Trim(h, "-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-")
	}
	if ValidateName(h) != nil {
		return "machine-1"
	}
	return h
}

// InitOptions are the choices of `uncloud init`.
type InitOptions struct {
	Name       string
	PublicIP   netip.Addr
	ListenPort uint16
}

// NewNetwork creates a network whose first machine is this one: a new
// network ID, gossip key, WireGuard key and identity key, and subnet 1.
func NewNetwork(opts InitOptions) (*MachineState, error) {
	if opts.Name == "" {
		opts.Name = DefaultName()
	}
	if err := ValidateName(opts.Name); err != nil {
		return nil, err
	}
	if opts.ListenPort == 0 {
		opts.ListenPort = tun.DefaultListenPort
	}
	networkID, err := randomID(8)
	if err != nil {
		return nil, err
	}
	machineID, err := randomID(8)
	if err != nil {
		return nil, err
	}
	wgKey, err := tun.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	_, identity, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		return nil, fmt.Errorf("generate gossip key: %w", err)
	}
	pub := identity.Public().(ed25519.PublicKey)
	st := &MachineState{
		Version:      machineStateVersion,
		NetworkID:    networkID,
		MachineID:    machineID,
		Name:         opts.Name,
		Subnet:       1,
		WireGuardKey: wgKey,
		IdentitySeed: identity.Seed(),
		GossipKeys:   [][]byte{gossipKey},
		ListenPort:   opts.ListenPort,
		PublicIP:     opts.PublicIP,
		RootKey:      trust.EncodeKey(pub),
	}
	// The first machine admits itself: its key is the network's root.
	ms, err := trust.NewSigner(machineID, identity).Issue(st.membershipSubject(), time.Now())
	if err != nil {
		return nil, err
	}
	st.Membership = ms
	return st, nil
}

// membershipSubject is the part of a membership that names this machine.
func (s *MachineState) membershipSubject() record.Membership {
	return record.Membership{Network: s.NetworkID, ID: s.MachineID,
		IdentityKey:  trust.EncodeKey(ed25519.NewKeyFromSeed(s.IdentitySeed).Public().(ed25519.PublicKey)),
		WireGuardKey: s.WireGuardKey.PublicKey().String(), Subnet: s.Subnet.String()}
}
