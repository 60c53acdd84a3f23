package runtime

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strconv"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"
)

// Bridge driver options Docker understands.
const (
	optBridgeName  = "com.docker.network.bridge.name"
	optMTU         = "com.docker.network.driver.mtu"
	optMasquerade  = "com.docker.network.bridge.enable_ip_masquerade"
	optGatewayMode = "com.docker.network.bridge.gateway_mode_ipv4"
)

// networkOptions are the driver options of the uncloud network for a
// Docker of the given major version. Masquerade is off because Docker's
// rule would rewrite mesh traffic; the agent masquerades non-mesh
// destinations itself. Docker 28 added a raw-table rule that drops
// packets routed straight to container addresses unless the gateway mode
// says the network may be reached without NAT.
func networkOptions(bridge string, mtu, dockerMajor int) map[string]string {
	o := map[string]string{
		optBridgeName: bridge,
		optMTU:        strconv.Itoa(mtu),
		optMasquerade: "false",
	}
	if dockerMajor >= 28 {
		o[optGatewayMode] = "nat-unprotected"
	}
	return o
}

// EnsureNetwork creates the bridge network `uncloud` for subnet (its .1
// the gateway) with the given MTU, or adopts an existing one that
// matches. A network of that name that differs is refused with what
// differs; it is replaced only when the agent made it and no container
// is attached.
func (r *Runtime) EnsureNetwork(ctx context.Context, subnet netip.Prefix, mtu int) error {
	subnet = subnet.Masked()
	gateway := subnet.Addr().Next()
	want := networkOptions(r.cfg.Bridge, mtu, r.dockerMajor())
	cur, err := r.docker.NetworkInspect(ctx, r.cfg.Network, network.InspectOptions{})
	switch {
	case err == nil:
		problem := networkMismatch(cur, subnet, gateway, want)
		if problem == "" {
			return nil
		}
		if cur.Labels[LabelManaged] == "true" && len(cur.Containers) > 0 && onlyMTUDiffers(cur, subnet, gateway, want) {
			// An upgrade changed the tunnel MTU. Replacing the network
			// would mean stopping its containers; a container MTU above
			// the tunnel's still works (the kernel answers with "fragmentation
			// needed"), so keep it until it is empty.
			r.log.Warn("Docker network keeps its old MTU while containers are attached", "network", r.cfg.Network,
				"mtu", cur.Options[optMTU], "want", mtu)
			return nil
		}
		if cur.Labels[LabelManaged] != "true" || len(cur.Containers) > 0 {
			return fmt.Errorf("Docker network %q exists but %s: remove it (docker network rm %s, after moving its containers) and restart the agent",
				r.cfg.Network, problem, r.cfg.Network)
		}
		r.log.Info("recreating the Docker network", "network", r.cfg.Network, "because", problem)
		if err := r.docker.NetworkRemove(ctx, cur.ID); err != nil {
			return fmt.Errorf("remove outdated Docker network %q: %w", r.cfg.Network, err)
		}
	case errdefs.IsNotFound(err):
	default:
		return fmt.Errorf("inspect Docker network %q: %w", r.cfg.Network, err)
	}
	_, err = r.docker.NetworkCreate(ctx, r.cfg.Network, network.CreateOptions{
		Driver:  "bridge",
		Options: want,
		Labels:  map[string]string{LabelManaged: "true", LabelMachine: r.cfg.MachineID},
		IPAM: &network.IPAM{
			Driver: "default",
			Config: []network.IPAMConfig{{Subnet: subnet.String(), Gateway: gateway.String()}},
		},
	})
	if err != nil {
		return fmt.Errorf("create Docker network %q on %v: %w", r.cfg.Network, subnet, err)
	}
	r.log.Info("created Docker network", "network", r.cfg.Network, "subnet", subnet, "bridge", r.cfg.Bridge, "mtu", mtu)
	return nil
}

// onlyMTUDiffers: the network matches apart from its MTU option.
func onlyMTUDiffers(n network.Inspect, subnet netip.Prefix, gateway netip.Addr, want map[string]string) bool {
	if got, ok := n.Options[optMTU]; !ok || got == want[optMTU] {
		return false
	}
	same := maps.Clone(want)
	same[optMTU] = n.Options[optMTU]
	return networkMismatch(n, subnet, gateway, same) == ""
}

// networkMismatch says how an existing network differs from the one
// wanted, or "" when it can be adopted.
func networkMismatch(n network.Inspect, subnet netip.Prefix, gateway netip.Addr, want map[string]string) string {
	if n.Driver != "bridge" {
		return fmt.Sprintf("its driver is %q, not bridge", n.Driver)
	}
	if len(n.IPAM.Config) != 1 {
		return fmt.Sprintf("it has %d subnets, not just %v", len(n.IPAM.Config), subnet)
	}
	c := n.IPAM.Config[0]
	if p, err := netip.ParsePrefix(c.Subnet); err != nil || p.Masked() != subnet {
		return fmt.Sprintf("its subnet is %q, not %v", c.Subnet, subnet)
	}
	if c.Gateway != "" && c.Gateway != gateway.String() {
		return fmt.Sprintf("its gateway is %s, not %v", c.Gateway, gateway)
	}
	for k, v := range want {
		got, ok := n.Options[k]
		if k == optMasquerade && !ok {
			got = "true" // Docker's default
		}
		if got != v {
			return fmt.Sprintf("its option %s is %q, not %q", k, got, v)
		}
	}
	return ""
}
