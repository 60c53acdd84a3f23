// Package tun owns the packet path of a machine: an embedded wireguard-go
// device over either a kernel TUN interface (configured through netlink) or a
// userspace gVisor netstack, the conn.Bind that shares the WireGuard UDP socket
// with STUN and relay traffic, and the runtime peer API that the membership
// and NAT-traversal layers drive.
//
// Nothing above this package talks to wireguard-go directly: callers see a
// Device with SetPeer, RemovePeer, Peers, DialContext and Listen, and the same
// calls work whichever mode the device chose.
package tun
