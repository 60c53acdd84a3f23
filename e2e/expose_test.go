package e2e

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// TestNetstackExposesOnlyListedPorts runs a netstack host with two
// localhost services, one exposed and one not, and checks from a kernel
// host and from another netstack host (through its SOCKS5) that only the
// exposed one is reachable over the mesh; that an exposed port with nothing
// behind it refuses rather than accepting and resetting (else every port
// looks open); and that an exposed UDP port is forwarded.
func TestNetstackExposesOnlyListedPorts(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	const (
		exposed      = 8080 // echo on 127.0.0.1, --expose 8080
		private      = 8081 // echo on 127.0.0.1, NOT exposed: a localhost-only service
		exposedEmpty = 8082 // --expose 8082, nothing listening
		exposedUDP   = 5353 // --expose 5353/udp, UDP echo on 127.0.0.1
		privateUDP   = 5354 // UDP echo on 127.0.0.1, NOT exposed
	)
	hosts, err := l.AddHosts(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	socks := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort)
	agents, err := lab.StartMesh(ctx, []lab.Node{
		{Host: hosts[0]},
		{Host: hosts[1], Options: lab.AgentOptions{Userspace: true,
			Expose: []string{itoa(exposed), itoa(exposedEmpty), itoa(exposedUDP) + "/udp"}}},
		{Host: hosts[2], Options: lab.AgentOptions{Userspace: true, SOCKS5: socks}},
	})
	if err != nil {
		t.Fatal(err)
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	target := hosts[1]
	for _, port := range []uint16{exposed, private} {
		if _, err := target.StartEcho(ctx, fmtf("echo%d", port), netip.AddrPortFrom(loopback, port)); err != nil {
			t.Fatal(err)
		}
	}
	for _, port := range []uint16{exposedUDP, privateUDP} {
		if _, err := target.StartUDPEcho(ctx, fmtf("udpecho%d", port), netip.AddrPortFrom(loopback, port)); err != nil {
			t.Fatal(err)
		}
	}
	mesh := agents[1].MeshAddr()

	clients := []struct {
		name string
		host *lab.Host
		opts lab.DialOptions
	}{
		{"kernel host", hosts[0], lab.DialOptions{Timeout: 5 * time.Second}},
		{"netstack host via SOCKS5", hosts[2], lab.DialOptions{Timeout: 5 * time.Second, SOCKS5: socks}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			// The exposed port works (retry: the first dial waits for a handshake).
			testkit.Eventually(t, fmtf("an echo from exposed port %d", exposed), 20*time.Second, func() error {
				res, err := c.host.Dial(ctx, netip.AddrPortFrom(mesh, exposed), true, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Echoed {
					return errors.New(fmtf("%+v", res))
				}
				return nil
			})
			// The private service must not be reachable, and must be
			// refused, not left hanging.
			for _, port := range []uint16{private, exposedEmpty} {
				res, err := c.host.Dial(ctx, netip.AddrPortFrom(mesh, port), true, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case res.Echoed:
					t.Errorf("port %d reached a host service through the mesh: %+v", port, res)
				case res.Connected:
					t.Errorf("port %d: connection accepted (and then failed: %s); a closed port must refuse the handshake", port, res.Error)
				case !res.Refused && res.SOCKSCode == 0:
					t.Errorf("port %d: %s; want an active refusal, not a timeout", port, res.Error)
				default:
					t.Logf("port %d refused: %s", port, res.Error)
				}
			}
		})
	}

	t.Run("udp", func(t *testing.T) {
		probe, err := hosts[0].ProbeUDP(ctx, []netip.AddrPort{netip.AddrPortFrom(mesh, exposedUDP)}, 10*time.Second)
		if err != nil {
			t.Fatalf("exposed UDP port %d from the kernel host: %v", exposedUDP, err)
		}
		t.Logf("exposed UDP: the host service saw the datagram from %v", probe.Observed)
		// The same request to the private UDP service gets no answer.
		probe, err = hosts[0].ProbeUDP(ctx, []netip.AddrPort{netip.AddrPortFrom(mesh, privateUDP)}, 2*time.Second)
		switch {
		case err == nil:
			t.Errorf("UDP port %d, not exposed, answered through the mesh: %v", privateUDP, probe.Observed)
		case !strings.Contains(err.Error(), "no answer"):
			t.Errorf("UDP port %d: %v, want no answer", privateUDP, err)
		}
	})
}
