package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/uncloud-mesh/uncloud/agent/hostnet"
	"github.com/uncloud-mesh/uncloud/agent/rootless"
	"github.com/uncloud-mesh/uncloud/tun"
)

// errRootlessProxies is why a rootless agent refuses to move its proxies
// at runtime: it listens on the host only through sockets its starter
// opened there before entering rootlesskit's network namespace, and it
// cannot open new ones from inside.
var errRootlessProxies = errors.New("in rootless mode the proxies listen on sockets the agent's starter opened on the host before entering rootlesskit's network namespace, and the agent cannot open host sockets from inside it: restart the agent with the new address (agent --socks5/--http-proxy ADDR, or off)")

// rootlessHostNet makes a rootless agent's host networking the host's:
// the proxies serve on the host sockets handed in, and the exposed ports
// listen on the mesh address inside the namespace and are forwarded to
// the host's 127.0.0.1 through the host-side helper.
func (d *Daemon) rootlessHostNet(ctx context.Context, rt *hostnet.Runtime) {
	hs := d.opts.RootlessHost
	rt.Listen = hs.Listen
	rt.FixedProxies = errRootlessProxies
	dialer := hs.Dialer()
	if dialer == nil {
		rt.Forward = noHostDialer{}
		return
	}
	e := &rootless.Exposer{Addr: d.state.MeshAddress(), Dial: dialer.Dial, Log: d.log.With("component", "expose")}
	e.Start(ctx)
	rt.Forward = e
}

// noHostDialer refuses exposed ports: the agent's starter started no
// host-side helper (see its log), so the host's ports are out of reach.
type noHostDialer struct{}

func (noHostDialer) SetExposed(ports []tun.ExposedPort) error {
	if len(ports) == 0 {
		return nil
	}
	return fmt.Errorf("expose %v: the host's ports are out of reach: the agent runs inside rootlesskit's network namespace and its starter started no host-side helper to dial them (see the log of the agent's start)", ports)
}
