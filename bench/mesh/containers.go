package main

import (
	"context"
	"fmt"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Container rows: iperf3 runs in a "container" behind each side, a network
// namespace on a bridge in the side's namespace, as Docker's uncloud
// network is made (bridge at 10.210.X.1/24, the same address the mesh
// interface holds as /32, the container at 10.210.X.2 with its default
// route via the bridge, routed without NAT). The traffic crosses the
// bridge, the host's forwarding and the mesh interface on both sides,
// which is the path containers take; what differs between the rows is
// only B's interface: a TUN, or the veth stand-in of a host without
// /dev/net/tun.

func uncloudTUNContainersPeer() peer {
	return peer{
		name:  "ctr-tun",
		about: "container ↔ container: kernel TUN in A and B, iperf3 in a container namespace behind each side's bridge; rows: B receives and B sends (-R)",
		tools: []string{toolUncloud},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startUncloudContainers(ctx, env, l, false)
		},
	}
}

func uncloudVethContainersPeer() peer {
	return peer{
		name: "ctr-veth",
		about: "container ↔ container: kernel TUN in A, B's agent without /dev/net/tun (an empty tmpfs on /dev/net in its " +
			"mount namespace), so its mesh interface is the veth stand-in; rows: B receives (A sends) and B sends (-R)",
		tools: []string{toolUncloud},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startUncloudContainers(ctx, env, l, true)
		},
	}
}

// containerAddr is the container of side x (1 or 2).
func containerAddr(x meshaddr.Subnet) string {
	a := x.MachineAddr().As4()
	a[3] = 2
	return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3])
}

func startUncloudContainers(ctx context.Context, env *environment, l *lab, vethB bool) (*session, error) {
	var wrapB []string
	if vethB {
		wrapB = []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs none /dev/net && exec "$@"`, "sh"}
	}
	s, err := startUncloudWith(ctx, env, l, false, wrapB)
	if err != nil {
		return s, err
	}
	if vethB {
		if err := s.daemons[1].waitFor(ctx, "using a veth pair"); err != nil {
			return s, fmt.Errorf("B's agent did not take the veth stand-in: %w", err)
		}
		s.note = "B " + offloads(ctx, l.b, "uncloud") + "; A " + s.note
	}
	// Both directions for both rows: B's interface receives what A sends,
	// and sends with iperf3 -R.
	s.directions = []direction{{suffix: " (B receives)"}, {suffix: " (B sends)", reverse: true}}
	for i, side := range []struct {
		ns string
		x  meshaddr.Subnet
	}{{l.a, 1}, {l.b, 2}} {
		ctr := fmt.Sprintf("%sc", side.ns)
		l.extra = append(l.extra, ctr)
		gw := side.x.MachineAddr().String()
		steps := [][]string{
			{"ip", "netns", "add", ctr},
			{"ip", "-n", side.ns, "link", "add", "ucbr", "type", "bridge"},
			{"ip", "-n", side.ns, "link", "set", "ucbr", "mtu", "1376"},
			{"ip", "-n", side.ns, "addr", "add", gw + "/24", "dev", "ucbr"},
			{"ip", "-n", side.ns, "link", "add", "ctr0", "type", "veth", "peer", "name", "eth0", "netns", ctr},
			{"ip", "-n", side.ns, "link", "set", "ctr0", "master", "ucbr", "mtu", "1376", "up"},
			{"ip", "-n", side.ns, "link", "set", "ucbr", "up"},
			{"ip", "netns", "exec", side.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
			{"ip", "-n", ctr, "link", "set", "lo", "up"},
			{"ip", "-n", ctr, "addr", "add", containerAddr(side.x) + "/24", "dev", "eth0"},
			{"ip", "-n", ctr, "link", "set", "eth0", "mtu", "1376", "up"},
			{"ip", "-n", ctr, "route", "add", "default", "via", gw},
		}
		for _, st := range steps {
			if _, err := runCmd(ctx, st...); err != nil {
				return s, fmt.Errorf("container of side %d: %w", i+1, err)
			}
		}
	}
	s.clientNS, s.serverNS = l.a+"c", l.b+"c"
	s.target, s.serverBind, s.pingTarget = containerAddr(2), containerAddr(2), containerAddr(2)
	return s, nil
}
