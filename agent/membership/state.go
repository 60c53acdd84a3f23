package membership

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/internal/atomicfile"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// DefaultDataDir holds a machine's keys, network secrets and state.
const DefaultDataDir = "/var/lib/uncloud"

// machineStateFile holds everything secret about this machine; it is the
// only file of the data dir that must never leave the machine.
const machineStateFile = "machine.json"

// machineStateVersion is bumped when the meaning of a field changes.
const machineStateVersion = 1

// ErrNotInitialized means the data dir has no machine yet: run init or join.
var ErrNotInitialized = errors.New("this machine is not part of a network yet: run 'uncloud init' or 'uncloud join <token>'")

// MachineState is this machine's membership: who it is, which network it
// belongs to and the secrets that prove both. Written once by init or join,
// read at every agent start, so the machine comes back after a restart
// (even kill -9) with the same identity and subnet.
type MachineState struct {
	Version   int    `json:"version"`
	NetworkID string `json:"network_id"`
	MachineID string `json:"machine_id"`
	Name      string `json:"name"`
	// Subnet is this machine's /24 (stored as the number X).
	Subnet meshaddr.Subnet `json:"subnet"`

	WireGuardKey tun.Key `json:"wireguard_private_key"`
	IdentitySeed []byte  `json:"identity_seed"`
	// RootKey is the network's root: the first machine's identity key
	// (public), the anchor of every membership (package trust).
	RootKey string `json:"root_key,omitempty"`
	// Membership is the signed statement that admitted this machine; it
	// goes into the machine record.
	Membership *record.Membership `json:"membership,omitempty"`
	// GossipKeys encrypt gossip; the first one encrypts, all decrypt, so a
	// key can be rotated without a flag day.
	GossipKeys [][]byte `json:"gossip_keys"`
	// GossipKeyEpoch counts rotations; with the key it orders two
	// keyrings, so every machine ends on the same one (gossipkeys.go).
	GossipKeyEpoch uint64 `json:"gossip_key_epoch,omitempty"`
	// Roles are published in the machine record (e.g. "ingress").
	Roles []string `json:"roles,omitempty"`
	// Labels are published in the machine record, for placement
	// constraints (node.labels.KEY).
	Labels map[string]string `json:"labels,omitempty"`

	ListenPort uint16     `json:"listen_port"`
	PublicIP   netip.Addr `json:"public_ip,omitzero"`
	// Seeds are the machines known when this one joined; the replicated
	// state takes over once it is in sync.
	Seeds []Seed `json:"seeds,omitempty"`
}

// Seed is enough to reach one machine before the state is replicated.
type Seed struct {
	Name         string           `json:"name"`
	MachineID    string           `json:"machine_id,omitempty"`
	IdentityKey  string           `json:"identity_key,omitempty"`
	WireGuardKey tun.Key          `json:"wireguard_key"`
	Address      netip.Addr       `json:"address"` // mesh address
	Subnet       netip.Prefix     `json:"subnet"`
	Endpoints    []netip.AddrPort `json:"endpoints"`
}

// MeshAddress is the machine's address on the mesh.
func (s *MachineState) MeshAddress() netip.Addr { return s.Subnet.MachineAddr() }

// SubnetPrefix is the machine's /24.
func (s *MachineState) SubnetPrefix() netip.Prefix { return s.Subnet.Prefix() }

func (s *MachineState) validate() error {
	switch {
	case s.Version != machineStateVersion:
		return fmt.Errorf("machine state version %d, this uncloud understands %d", s.Version, machineStateVersion)
	case s.NetworkID == "" || s.MachineID == "" || s.Name == "":
		return errors.New("machine state lacks network id, machine id or name")
	case !s.Subnet.Valid():
		return fmt.Errorf("machine state: %w", s.Subnet.Check())
	case s.WireGuardKey.IsZero():
		return errors.New("machine state lacks the WireGuard key")
	case len(s.IdentitySeed) != 32:
		return errors.New("machine state lacks the identity key")
	case len(s.GossipKeys) == 0:
		return errors.New("machine state lacks the gossip key")
	}
	for i, k := range s.GossipKeys {
		if len(k) != 32 {
			return fmt.Errorf("machine state gossip key %d is %d bytes, want 32", i, len(k))
		}
	}
	return nil
}

// LoadMachineState reads the data dir; ErrNotInitialized if it has none.
func LoadMachineState(dataDir string) (*MachineState, error) {
	path := filepath.Join(dataDir, machineStateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var s MachineState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// Save writes the state atomically (temp file, fsync, rename, fsync of
// the directory), mode 0600 in a 0700 dir: a crash leaves either the old
// file or the new one, never half of one.
func (s *MachineState) Save(dataDir string) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", dataDir, err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dataDir, machineStateFile), b, 0o600)
}

// randomID returns n random bytes in hex: network and machine IDs.
func randomID(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
