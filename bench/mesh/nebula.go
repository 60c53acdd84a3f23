package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Tunnel addresses of the nebula peer.
const (
	nebulaAddrA = "10.212.0.1"
	nebulaAddrB = "10.212.0.2"
	nebulaPort  = 4242
)

func nebulaPeer() peer {
	return peer{
		name:  "nebula",
		about: "Debian's nebula, own CA, static host map, no lighthouse, default MTU 1300, allow-all firewall",
		tools: []string{"nebula", "nebula-cert"},
		start: startNebula,
	}
}

// nebulaConfig is a lighthouse-less config: each side knows the other's
// underlay address from the static host map. Defaults are kept (tun MTU
// 1300, cipher aes) because that is what a user gets.
const nebulaConfig = `pki:
  ca: %[1]s/ca.crt
  cert: %[1]s/%[2]s.crt
  key: %[1]s/%[2]s.key
static_host_map:
  "%[3]s": ["%[4]s:%[5]d"]
lighthouse:
  am_lighthouse: false
  hosts: []
listen:
  host: 0.0.0.0
  port: %[5]d
punchy:
  punch: false
tun:
  dev: %[6]s
logging:
  level: info
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
`

func startNebula(ctx context.Context, env *environment, l *lab) (*session, error) {
	s := &session{target: nebulaAddrB, serverBind: nebulaAddrB, pingTarget: nebulaAddrB}
	dir := l.dir
	steps := [][]string{
		{"nebula-cert", "ca", "-name", "bench", "-out-crt", dir + "/ca.crt", "-out-key", dir + "/ca.key"},
		{"nebula-cert", "sign", "-name", "a", "-ip", nebulaAddrA + "/24", "-ca-crt", dir + "/ca.crt", "-ca-key", dir + "/ca.key", "-out-crt", dir + "/a.crt", "-out-key", dir + "/a.key"},
		{"nebula-cert", "sign", "-name", "b", "-ip", nebulaAddrB + "/24", "-ca-crt", dir + "/ca.crt", "-ca-key", dir + "/ca.key", "-out-crt", dir + "/b.crt", "-out-key", dir + "/b.key"},
	}
	for _, st := range steps {
		if _, err := runCmd(ctx, st...); err != nil {
			return s, fmt.Errorf("make nebula certificates: %w", err)
		}
	}
	sides := []struct {
		ns, name, peerAddr, endpoint, iface string
		cpu                                 int
	}{
		{l.a, "a", nebulaAddrB, underlayB, "nb" + l.tag + "a", l.pin.daemonA},
		{l.b, "b", nebulaAddrA, underlayA, "nb" + l.tag + "b", l.pin.daemonB},
	}
	for _, side := range sides {
		path := filepath.Join(dir, side.name+".yml")
		conf := fmt.Sprintf(nebulaConfig, dir, side.name, side.peerAddr, side.endpoint, nebulaPort, side.iface)
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return s, fmt.Errorf("write %s: %w", path, err)
		}
		d, err := startDaemon("nebula in "+side.ns, filepath.Join(dir, side.name+".log"), nil,
			nsCmd(side.ns, side.cpu, "nebula", "-config", path)...)
		if err != nil {
			return s, err
		}
		s.daemons = append(s.daemons, d)
		if err := d.waitFor(ctx, "Nebula interface is active"); err != nil {
			return s, err
		}
	}
	return s, nil
}
