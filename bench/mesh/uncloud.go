package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// uncloudAddr is the mesh address of uncloud peer x (A is 1, B is 2).
func uncloudAddr(x meshaddr.Subnet) string { return x.MachineAddr().String() }

func uncloudTUNPeer() peer {
	return peer{
		name:  "uncloud-tun",
		about: "uncloud agent --config, kernel TUN mode on both sides",
		tools: []string{toolUncloud, "ethtool"},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startUncloud(ctx, env, l, false)
		},
	}
}

func uncloudNetstackPeer() peer {
	return peer{
		name: "uncloud-netstack",
		about: "uncloud kernel TUN in A ↔ uncloud --userspace --expose 5201 in B; iperf3 server on B's 127.0.0.1:5201 " +
			"behind the netstack forwarder; rows: netstack receives (A sends) and netstack sends (iperf3 -R)",
		tools: []string{toolUncloud},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startUncloud(ctx, env, l, true)
		},
	}
}

const uncloudConfig = `[Interface]
PrivateKey = %s
Address = %s
ListenPort = 51820

[Peer]
PublicKey = %s
Endpoint = %s:51820
AllowedIPs = %s/24
PersistentKeepalive = 25
`

// startUncloud runs the agent in kernel TUN mode in A and, in B, in kernel
// mode too or in netstack mode exposing the iperf3 port.
func startUncloud(ctx context.Context, env *environment, l *lab, netstackB bool) (*session, error) {
	return startUncloudWith(ctx, env, l, netstackB, nil)
}

// startUncloudWith is startUncloud with B's agent started under wrapB (a
// command that execs its arguments), if any.
func startUncloudWith(ctx context.Context, env *environment, l *lab, netstackB bool, wrapB []string) (*session, error) {
	ka, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	kb, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	s := &session{target: uncloudAddr(2), serverBind: uncloudAddr(2), pingTarget: uncloudAddr(2)}
	if netstackB {
		// The netstack agent has no interface: iperf3 runs on B's host
		// side and the agent forwards the exposed port to 127.0.0.1.
		s.serverBind = "127.0.0.1"
		s.directions = []direction{{suffix: " (ns receives)"}, {suffix: " (ns sends)", reverse: true}}
	}
	sides := []struct {
		ns, name, addr, peerNet, endpoint string
		self, other                       keyPair
		cpu                               int
		extra                             []string
	}{
		{l.a, "a", uncloudAddr(1), meshaddr.Subnet(2).Prefix().Addr().String(), underlayB, ka, kb, l.pin.daemonA, nil},
		{l.b, "b", uncloudAddr(2), meshaddr.Subnet(1).Prefix().Addr().String(), underlayA, kb, ka, l.pin.daemonB, nil},
	}
	if netstackB {
		sides[1].extra = []string{"--userspace", "--expose", iperfPort}
	}
	for _, side := range sides {
		path := filepath.Join(l.dir, side.name+".conf")
		conf := fmt.Sprintf(uncloudConfig, side.self.private, side.addr, side.other.public, side.endpoint, side.peerNet)
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return s, fmt.Errorf("write %s: %w", path, err)
		}
		argv := append([]string{env.uncloud, "agent", "--config", path}, side.extra...)
		if side.name == "b" && wrapB != nil {
			argv = append(append([]string{}, wrapB...), argv...)
		}
		d, err := startDaemon("uncloud in "+side.ns, filepath.Join(l.dir, side.name+".log"), nil, nsCmd(side.ns, side.cpu, argv...)...)
		if err != nil {
			return s, err
		}
		s.daemons = append(s.daemons, d)
		if err := d.waitFor(ctx, `msg="mesh up"`); err != nil {
			return s, err
		}
	}
	// The figures mean little if the TUN offloads are off, so record them.
	s.note = offloads(ctx, l.a, "uncloud")
	return s, nil
}
