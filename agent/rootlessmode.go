package agent

import "github.com/uncloud-mesh/uncloud/tun"

// ModeRootless is the mode a machine reports when its agent runs inside a
// rootless Docker's user and network namespaces (agent/rootless): a
// kernel TUN there, next to that Docker's bridge, without root on the host.
const ModeRootless = "rootless"

// mode is this machine's mode as the network is told it (machine ls,
// status, gossip metadata): the device's (kernel, kernel/veth, netstack),
// or rootless.
func (d *Daemon) mode() string {
	if d.opts.RootlessPID != 0 && d.dev.Mode() == tun.ModeKernel {
		return ModeRootless
	}
	return d.dev.ModeName()
}
