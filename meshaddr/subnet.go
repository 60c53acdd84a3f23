package meshaddr

import (
	"fmt"
	"net/netip"
)

// Subnet is X in a machine's subnet 10.210.X.0/24, 1..254. The machine is
// 10.210.X.1 (on its WireGuard interface and as its bridge gateway) and its
// containers are 10.210.X.Y. 0 is the join range and 255 stays unused.
//
// Subnet has no text marshaling on purpose: the agent's own files and its
// API carry the number, and the replicated machine record carries the
// prefix string ("10.210.3.0/24"); both formats predate this type and stay
// as they are. Convert with ParseSubnet and String at those edges.
type Subnet uint8

// Lowest and highest subnet a machine may own.
const (
	MinSubnet Subnet = 1
	MaxSubnet Subnet = 254
)

// Valid reports whether s is a machine subnet (1..254).
func (s Subnet) Valid() bool { return s >= MinSubnet && s <= MaxSubnet }

// Check returns an error naming s unless it is valid.
func (s Subnet) Check() error {
	if !s.Valid() {
		return fmt.Errorf("subnet %d is outside %d..%d", s, MinSubnet, MaxSubnet)
	}
	return nil
}

// SubnetOf converts an untyped number, as read from JSON or a flag, with a
// range check.
func SubnetOf(n int) (Subnet, error) {
	if n < int(MinSubnet) || n > int(MaxSubnet) {
		return 0, fmt.Errorf("subnet %d is outside %d..%d", n, MinSubnet, MaxSubnet)
	}
	return Subnet(n), nil
}

// Prefix is 10.210.X.0/24.
func (s Subnet) Prefix() netip.Prefix { return netip.PrefixFrom(s.ContainerAddr(0), 24) }

// MachineAddr is 10.210.X.1, the machine's mesh address and bridge gateway.
func (s Subnet) MachineAddr() netip.Addr { return s.ContainerAddr(1) }

// ContainerAddr is 10.210.X.y.
func (s Subnet) ContainerAddr(y uint8) netip.Addr {
	return netip.AddrFrom4([4]byte{meshOctet0, meshOctet1, uint8(s), y})
}

// String is the prefix form, "10.210.3.0/24", as the machine record stores it.
func (s Subnet) String() string { return s.Prefix().String() }

// ParseSubnet reads "10.210.X.0/24", the form of the machine record. Host
// bits must be zero: "10.210.X.7/24" is an address, not a subnet.
func ParseSubnet(text string) (Subnet, error) {
	p, err := netip.ParsePrefix(text)
	if err != nil {
		return 0, fmt.Errorf("subnet %q: %w", text, err)
	}
	s, err := SubnetOfPrefix(p)
	if err != nil {
		return 0, fmt.Errorf("subnet %q: %w", text, err)
	}
	return s, nil
}

// SubnetOfPrefix checks that p is a machine's /24 in the mesh and returns X.
func SubnetOfPrefix(p netip.Prefix) (Subnet, error) {
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() != 24 {
		return 0, fmt.Errorf("%v is not an IPv4 /24", p)
	}
	if !Contains(p.Addr()) {
		return 0, fmt.Errorf("%v is outside the mesh %v", p, Mesh())
	}
	if p.Masked() != p {
		return 0, fmt.Errorf("%v has host bits set (want %v)", p, p.Masked())
	}
	return SubnetOfAddr(p.Addr())
}

// SubnetOfAddr returns the machine subnet holding addr.
func SubnetOfAddr(addr netip.Addr) (Subnet, error) {
	addr = addr.Unmap()
	if !Contains(addr) {
		return 0, fmt.Errorf("%v is outside the mesh %v", addr, Mesh())
	}
	s := Subnet(addr.As4()[2])
	if !s.Valid() {
		return 0, fmt.Errorf("%v is in no machine's subnet (%v is the join range, .255 is unused)", addr, Join())
	}
	return s, nil
}
