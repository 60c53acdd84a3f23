package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Tunnel addresses of the wireguard-go peers.
const (
	wgAddrA = "10.211.0.1"
	wgAddrB = "10.211.0.2"
	wgPort  = "51820"
	wgMTU   = "1420" // wg-quick's default on a 1500-byte underlay, as uncloud uses
)

func wgDebianPeer() peer {
	return peer{
		name:  "wg-debian",
		about: "Debian's wireguard-go (userspace, TUN) configured with wg setconf and ip",
		tools: []string{"wireguard-go", "wg", "ethtool"},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startWireGuardGo(ctx, env, l, "wireguard-go")
		},
	}
}

func wgCurrentPeer() peer {
	return peer{
		name:  "wg-current",
		about: "wireguard-go at the version uncloud embeds, go install'ed from the module proxy, same wg setup",
		tools: []string{toolWGCurrent, "wg", "ethtool"},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startWireGuardGo(ctx, env, l, env.wgCurrent)
		},
	}
}

// startWireGuardGo runs the stock wireguard-go daemon bin in each namespace
// and configures it the way a wg-quick user would.
func startWireGuardGo(ctx context.Context, env *environment, l *lab, bin string) (*session, error) {
	ka, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	kb, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	s := &session{target: wgAddrB, serverBind: wgAddrB, pingTarget: wgAddrB}
	sides := []struct {
		ns, iface, addr, peerAddr, endpoint string
		self, other                         keyPair
		cpu                                 int
	}{
		// Interface names carry the run's tag because wireguard-go's UAPI
		// socket, /var/run/wireguard/<iface>.sock, is shared by all
		// namespaces.
		{l.a, "wg" + l.tag + "a", wgAddrA, wgAddrB, underlayB, ka, kb, l.pin.daemonA},
		{l.b, "wg" + l.tag + "b", wgAddrB, wgAddrA, underlayA, kb, ka, l.pin.daemonB},
	}
	for _, side := range sides {
		conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:%s\nAllowedIPs = %s/32\n",
			side.self.private, wgPort, side.other.public, side.endpoint, wgPort, side.peerAddr)
		confPath := filepath.Join(l.dir, side.iface+".conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return s, fmt.Errorf("write %s: %w", confPath, err)
		}
		// -f keeps it in the foreground, so the pid we hold is the daemon
		// (for CPU accounting and a clean stop).
		d, err := startDaemon(filepath.Base(bin)+" in "+side.ns, filepath.Join(l.dir, side.iface+".log"),
			[]string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"},
			nsCmd(side.ns, side.cpu, bin, "-f", side.iface)...)
		if err != nil {
			return s, err
		}
		s.daemons = append(s.daemons, d)
		if err := waitInterface(ctx, side.ns, side.iface, d); err != nil {
			return s, err
		}
		for _, step := range [][]string{
			{"wg", "setconf", side.iface, confPath},
			{"ip", "addr", "add", side.addr + "/24", "dev", side.iface},
			{"ip", "link", "set", side.iface, "mtu", wgMTU, "up"},
		} {
			if _, err := runCmd(ctx, nsCmd(side.ns, -1, step...)...); err != nil {
				return s, fmt.Errorf("configure %s in %s: %w", side.iface, side.ns, err)
			}
		}
	}
	s.note = offloads(ctx, l.a, sides[0].iface)
	return s, nil
}

// waitInterface waits until the daemon has created iface in ns and its UAPI
// socket exists, so wg setconf does not race the daemon's start.
func waitInterface(ctx context.Context, ns, iface string, d *daemon) error {
	sock := "/var/run/wireguard/" + iface + ".sock"
	for {
		_, err := runCmd(ctx, "ip", "-n", ns, "link", "show", iface)
		if err == nil {
			if _, serr := os.Stat(sock); serr == nil {
				return nil
			}
		}
		if gone, why := d.exited(); gone {
			return fmt.Errorf("waiting for %s in %s: %s", iface, ns, why)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s in %s: %w", iface, ns, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// offloads returns the TUN offload features of iface in ns as ethtool -k
// reports them: on for TSO and GRO means the daemon gets and sends
// 64 KiB super-packets instead of one syscall per 1420-byte packet.
func offloads(ctx context.Context, ns, iface string) string {
	out, err := runCmd(ctx, nsCmd(ns, -1, "ethtool", "-k", iface)...)
	if err != nil {
		return fmt.Sprintf("%s offloads: ethtool failed: %v", iface, err)
	}
	want := []string{"tx-checksumming", "tx-tcp-segmentation", "tx-tcp6-segmentation", "generic-segmentation-offload", "generic-receive-offload", "rx-udp-gro-forwarding"}
	var parts []string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		for _, w := range want {
			if f := strings.Fields(v); k == w && len(f) > 0 {
				parts = append(parts, k+"="+f[0])
			}
		}
	}
	return fmt.Sprintf("%s offloads: %s", iface, strings.Join(parts, " "))
}
