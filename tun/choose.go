package tun

import (
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// Link is the kind of packet path a device uses, finer than Mode: kernel
// mode has a TUN or, on a host without /dev/net/tun, a veth pair with a
// packet socket.
type Link string

const (
	LinkTUN      Link = "tun"
	LinkVeth     Link = "veth"
	LinkNetstack Link = "netstack"
)

// Linux capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// chooseLink is the one place that decides the packet path, in order of
// preference: a kernel TUN; without /dev/net/tun (a locked-down VPS) but
// with CAP_NET_ADMIN and CAP_NET_RAW, a veth pair read through a packet
// socket, which is kernel mode to everything above it (containers,
// firewall, host programs); otherwise the netstack. It returns the kernel
// link (nil for the netstack) and, for the netstack, why (which capability
// or device is missing), in words fit for "containers: no" and the logs.
func chooseLink(cfg Config, mtu int, log *slog.Logger) (*kernelLink, string, error) {
	if cfg.Userspace {
		return nil, "userspace mode was asked for (--userspace)", nil
	}
	k, err := openKernel(cfg, mtu)
	if err == nil {
		return k, "", nil
	}
	if !kernelUnavailable(err) {
		return nil, "", err
	}
	tunErr := err
	var missing []string
	if !hasCapability(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !hasCapability(capNetRaw) {
		missing = append(missing, "CAP_NET_RAW")
	}
	if len(missing) > 0 {
		// Short: it travels in gossip metadata (at most 120 bytes with
		// "no: " and the agent's prefix), so the capability comes first.
		why := fmt.Sprintf("the agent lacks %s (needed for a TUN or veth interface)", joinAnd(missing))
		log.Info("kernel TUN unavailable, using userspace netstack", "reason", why, "tun", tunErr)
		return nil, why, nil
	}
	v, err := openVeth(cfg, mtu)
	if err != nil {
		why := fmt.Sprintf("no TUN and no veth stand-in: %v", err)
		log.Warn("kernel TUN and veth unavailable, using userspace netstack", "reason", why, "tun", tunErr)
		return nil, why, nil
	}
	log.Info("kernel TUN unavailable, using a veth pair and a packet socket in its place (kernel mode, containers can run)",
		"reason", tunErr, "interface", v.name, "agent_end", vethPeerName(v.name))
	return v, "", nil
}

// hasCapability reports whether this process holds capability c in its
// effective set.
func hasCapability(c uint) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return fmt.Sprintf("%s and %s", s[0], s[1])
}
