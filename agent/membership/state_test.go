package membership

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMachineStateSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := LoadMachineState(dir); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("empty dir: err = %v, want ErrNotInitialized", err)
	}
	st, err := NewNetwork(InitOptions{Name: "alpha", PublicIP: netip.MustParseAddr("203.0.113.5")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(dir); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, machineStateFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	got, err := LoadMachineState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.MachineID != st.MachineID || got.WireGuardKey != st.WireGuardKey || got.Subnet != 1 ||
		got.MeshAddress() != netip.MustParseAddr("10.210.1.1") || got.PublicIP != st.PublicIP || got.ListenPort != 51820 {
		t.Fatalf("loaded %+v, saved %+v", got, st)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
}

func TestMachineStateRejectsDamage(t *testing.T) {
	st, _ := NewNetwork(InitOptions{Name: "alpha"})
	tests := []struct {
		name   string
		mutate func(*MachineState)
		want   string
	}{
		{"subnet 0", func(s *MachineState) { s.Subnet = 0 }, "subnet 0"},
		{"subnet 255", func(s *MachineState) { s.Subnet = 255 }, "subnet 255"},
		{"no gossip key", func(s *MachineState) { s.GossipKeys = nil }, "gossip key"},
		{"short gossip key", func(s *MachineState) { s.GossipKeys = [][]byte{make([]byte, 5)} }, "gossip key 0 is 5 bytes"},
		{"future version", func(s *MachineState) { s.Version = 99 }, "version 99"},
		{"no identity", func(s *MachineState) { s.IdentitySeed = nil }, "identity key"},
	}
	for _, tt := range tests {
		s := *st
		tt.mutate(&s)
		if err := s.Save(t.TempDir()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Save error = %v, want %q", tt.name, err, tt.want)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, machineStateFile), []byte("{truncated"), 0o600)
	if _, err := LoadMachineState(dir); err == nil || !strings.Contains(err.Error(), "parse") {
		t.Fatalf("truncated file: err = %v", err)
	}
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"alpha": true, "pi-4": true, "a": true, "0box": true, strings.Repeat("a", 63): true,
		"": false, "-a": false, "a-": false, "Alpha": false, "a.b": false, "a_b": false, strings.Repeat("a", 64): false,
	} {
		if err := ValidateName(name); (err == nil) != ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	if err := ValidateName(DefaultName()); err != nil {
		t.Errorf("DefaultName() = %q is invalid: %v", DefaultName(), err)
	}
}
