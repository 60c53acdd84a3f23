package meshaddr

import (
	"fmt"
	"net/netip"
)

// meshOctets are the first two octets of every mesh address.
const meshOctet0, meshOctet1 = 10, 210

// Mesh is the whole mesh, 10.210.0.0/16: routed into the tunnel, held by the
// fail-closed route, never masqueraded, never offered as an endpoint.
func Mesh() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{meshOctet0, meshOctet1, 0, 0}), 16)
}

// Join is the part of the mesh that belongs to no machine, 10.210.0.0/24: a
// joiner uses 10.210.0.<slot> until it has a subnet of its own.
func Join() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{meshOctet0, meshOctet1, 0, 0}), 24)
}

// JoinAddr is the temporary address of the joiner holding a token's slot.
func JoinAddr(slot uint8) netip.Addr {
	return netip.AddrFrom4([4]byte{meshOctet0, meshOctet1, 0, slot})
}

// Contains reports whether addr is a mesh address.
func Contains(addr netip.Addr) bool { return Mesh().Contains(addr.Unmap()) }

// CheckAddr returns an error naming addr unless it lies in the mesh.
func CheckAddr(addr netip.Addr) error {
	if !Contains(addr) {
		return fmt.Errorf("address %v is outside the mesh %v", addr, Mesh())
	}
	return nil
}

// CheckPrefix returns an error naming p unless all of it lies in the mesh.
func CheckPrefix(p netip.Prefix) error {
	if !p.IsValid() || p.Bits() < Mesh().Bits() || !Contains(p.Addr()) {
		return fmt.Errorf("prefix %v is outside the mesh %v", p, Mesh())
	}
	return nil
}
