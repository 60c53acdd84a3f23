package tun

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// DialContext opens a connection from this machine's mesh address through
// the netstack. network is tcp, tcp4, udp or udp4; address is IP:PORT (the
// netstack has no resolver: callers resolve names first, e.g. through the
// mesh DNS).
func (n *netstack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	full, err := parseNetstackAddr(network, address, false)
	if err != nil {
		return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
	}
	switch network {
	case "tcp", "tcp4":
		c, err := gonet.DialContextTCP(ctx, n.stack, full, ipv4.ProtocolNumber)
		if err != nil {
			return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
		}
		return c, nil
	default:
		c, err := gonet.DialUDP(n.stack, nil, &full, ipv4.ProtocolNumber)
		if err != nil {
			return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
		}
		return c, nil
	}
}

// Listen opens a TCP listener inside the netstack, on this machine's mesh
// address. address is ":PORT" or "MESHADDR:PORT". Connections to a port
// listened on here are served by the listener, never forwarded to the host.
func (n *netstack) Listen(network, address string) (net.Listener, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("netstack listen %s %s: network is not tcp or tcp4", network, address)
	}
	full, err := parseNetstackAddr(network, address, true)
	if err != nil {
		return nil, fmt.Errorf("netstack listen %s %s: %w", network, address, err)
	}
	if err := n.checkLocal(full); err != nil {
		return nil, fmt.Errorf("netstack listen %s %s: %w", network, address, err)
	}
	l, err := gonet.ListenTCP(n.stack, full, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("netstack listen %s %s: %w", network, address, err)
	}
	return l, nil
}

// ListenPacket opens a UDP socket inside the netstack, on this machine's
// mesh address.
func (n *netstack) ListenPacket(network, address string) (net.PacketConn, error) {
	if network != "udp" && network != "udp4" {
		return nil, fmt.Errorf("netstack listen packet %s %s: network is not udp or udp4", network, address)
	}
	full, err := parseNetstackAddr(network, address, true)
	if err != nil {
		return nil, fmt.Errorf("netstack listen packet %s %s: %w", network, address, err)
	}
	if err := n.checkLocal(full); err != nil {
		return nil, fmt.Errorf("netstack listen packet %s %s: %w", network, address, err)
	}
	c, err := gonet.DialUDP(n.stack, &full, nil, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("netstack listen packet %s %s: %w", network, address, err)
	}
	return c, nil
}

// checkLocal refuses to bind an address the stack does not own, which gVisor
// would report with a less helpful error.
func (n *netstack) checkLocal(full tcpip.FullAddress) error {
	if full.Addr.Len() != 0 && full.Addr != n.addr {
		return fmt.Errorf("%v is not this machine's mesh address %v", full.Addr, n.addr)
	}
	return nil
}

// parseNetstackAddr parses IP:PORT (or :PORT when listen is set) into a
// gVisor address on the netstack's NIC.
func parseNetstackAddr(network, address string, listen bool) (tcpip.FullAddress, error) {
	switch network {
	case "tcp", "tcp4", "udp", "udp4":
	default:
		return tcpip.FullAddress{}, fmt.Errorf("network %q is not supported (tcp, tcp4, udp, udp4)", network)
	}
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return tcpip.FullAddress{}, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return tcpip.FullAddress{}, fmt.Errorf("port %q is not a number 0..65535", portText)
	}
	full := tcpip.FullAddress{NIC: netstackNIC, Port: uint16(port)}
	if host == "" {
		if !listen {
			return tcpip.FullAddress{}, fmt.Errorf("address has no host")
		}
		return full, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return tcpip.FullAddress{}, fmt.Errorf("host %q is not an IP address (the netstack does not resolve names)", host)
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return tcpip.FullAddress{}, fmt.Errorf("host %v is not an IPv4 address", ip)
	}
	if !listen && port == 0 {
		return tcpip.FullAddress{}, fmt.Errorf("port 0 cannot be dialed")
	}
	if listen && ip.IsUnspecified() {
		return full, nil
	}
	full.Addr = tcpip.AddrFrom4(ip.As4())
	return full, nil
}

// closing counts the stack's TCP connections whose end is not settled: open,
// or closing with a FIN of either side not yet acknowledged. TIME_WAIT is
// settled (this side acknowledged the other's FIN; nothing more is sent).
func (n *netstack) closing() int {
	count := 0
	for _, ep := range n.stack.RegisteredEndpoints() {
		t, ok := ep.(*tcp.Endpoint)
		if !ok {
			continue
		}
		switch tcp.EndpointState(t.State()) {
		case tcp.StateEstablished, tcp.StateSynSent, tcp.StateSynRecv, tcp.StateFinWait1,
			tcp.StateFinWait2, tcp.StateCloseWait, tcp.StateLastAck, tcp.StateClosing:
			count++
		}
	}
	return count
}
