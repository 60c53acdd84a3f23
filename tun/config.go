package tun

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

const (
	DefaultInterfaceName = "uncloud"
	DefaultListenPort    = 51820
	// DefaultKeepalive keeps NAT mappings open; 25 s is below common UDP timeouts.
	DefaultKeepalive = 25 * time.Second
)

// Config describes the local end of the mesh.
type Config struct {
	PrivateKey Key
	// Address is this machine's mesh address (meshaddr.Subnet.MachineAddr). The interface holds
	// only this /32; the rest of the mesh is reached through MeshPrefix.
	Address    netip.Addr
	MeshPrefix netip.Prefix // zero means meshaddr.Mesh()
	ListenPort uint16       // zero means DefaultListenPort
	// InterfaceName is the kernel TUN name; zero means DefaultInterfaceName.
	InterfaceName string
	// MTU of the tunnel; zero means meshaddr.TunnelMTU of the underlay.
	MTU int
	// Userspace forces the gVisor netstack even when a kernel TUN would work.
	Userspace bool
	// Expose lists the host ports that a netstack device forwards inbound
	// mesh connections to. Ignored in kernel mode, where the host's own
	// firewall decides.
	Expose []ExposedPort
	// Joining marks the temporary device of a machine that joins with a
	// token: its address is in meshaddr.Join(), which no machine owns.
	Joining bool
	// JoinPort is the only port that temporary join peers (meshaddr.Join())
	// may reach on this machine; zero means DefaultJoinPort.
	JoinPort uint16
	// Socket, when set, is an IPv4 UDP socket already bound (by the
	// rootless agent's starter, on the host's network) that WireGuard uses
	// instead of opening its own on ListenPort (SocketBind). The caller
	// keeps it; the device never closes it.
	Socket *os.File
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	out := *c
	if !out.MeshPrefix.IsValid() {
		out.MeshPrefix = meshaddr.Mesh()
	}
	if out.ListenPort == 0 {
		out.ListenPort = DefaultListenPort
	}
	if out.JoinPort == 0 {
		out.JoinPort = DefaultJoinPort
	}
	if out.InterfaceName == "" {
		out.InterfaceName = DefaultInterfaceName
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

func (c *Config) validate() error {
	if c.PrivateKey.IsZero() {
		return fmt.Errorf("tun config: private key is missing")
	}
	if !c.Address.Is4() {
		return fmt.Errorf("tun config: address %v is not an IPv4 address", c.Address)
	}
	if c.Joining && !meshaddr.Join().Contains(c.Address) {
		return fmt.Errorf("tun config: joining address %v is outside the join range %v", c.Address, meshaddr.Join())
	}
	if !c.Joining && meshaddr.Join().Contains(c.Address) {
		return fmt.Errorf("tun config: address %v is in the join range %v, which belongs to no machine", c.Address, meshaddr.Join())
	}
	if !c.MeshPrefix.Contains(c.Address) {
		return fmt.Errorf("tun config: address %v is outside the mesh %v", c.Address, c.MeshPrefix)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("tun config: mtu %d is out of range 576..65535", c.MTU)
	}
	if len(c.InterfaceName) > 15 {
		return fmt.Errorf("tun config: interface name %q is longer than 15 bytes", c.InterfaceName)
	}
	return nil
}

// ExposedPort is a host port that a netstack device forwards inbound
// connections to, written PORT or PORT/udp (PORT/tcp is the default).
type ExposedPort struct {
	Port  uint16
	Proto string // "tcp" or "udp"
}

func (e ExposedPort) String() string { return fmt.Sprintf("%d/%s", e.Port, e.Proto) }

// ParseExposedPort parses PORT[/tcp|/udp].
func ParseExposedPort(s string) (ExposedPort, error) {
	portText, proto, found := strings.Cut(strings.TrimSpace(s), "/")
	if !found {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return ExposedPort{}, fmt.Errorf("exposed port %q: protocol %q is neither tcp nor udp", s, proto)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return ExposedPort{}, fmt.Errorf("exposed port %q: %q is not a port number 1..65535", s, portText)
	}
	return ExposedPort{Port: uint16(port), Proto: proto}, nil
}

// Peer is a remote machine as the local WireGuard device knows it.
type Peer struct {
	PublicKey Key
	// Endpoint is where to send; the zero value leaves it to roaming (the
	// peer's first authenticated packet sets it).
	Endpoint netip.AddrPort
	// AllowedIPs are the sources accepted from and destinations routed to
	// this peer: its machine /24 in the mesh.
	AllowedIPs          []netip.Prefix
	PersistentKeepalive time.Duration // zero disables keepalives
}

// PeerStatus is a peer with what the device has observed of it.
type PeerStatus struct {
	Peer
	LastHandshake time.Time // zero if none yet
	// Relay is set, and Endpoint zero, when the peer is reached through a
	// relay (see RelayEndpoint).
	Relay   *RelayEndpoint
	RxBytes uint64
	TxBytes uint64
}
