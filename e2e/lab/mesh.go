package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Node says how one host joins a mesh made by StartMesh.
type Node struct {
	Host    *Host
	Subnet  int // X in meshaddr.Subnet; 0 means its position in the list + 1
	Options AgentOptions
}

// MeshAddr returns machine X's mesh address.
func MeshAddr(x int) netip.Addr { return meshaddr.Subnet(x).MachineAddr() }

// MeshSubnet returns machine X's subnet.
func MeshSubnet(x int) netip.Prefix { return meshaddr.Subnet(x).Prefix() }

// MeshConfigs makes fresh keys and a full-mesh static config for each node:
// everyone lists everyone else, with its public endpoint and /24.
func MeshConfigs(nodes []Node) ([]AgentConfig, error) {
	cfgs := make([]AgentConfig, len(nodes))
	for i, n := range nodes {
		x := n.Subnet
		if x == 0 {
			x = i + 1
		}
		if x < 1 || x > 254 {
			return nil, fmt.Errorf("node %d (%s): subnet %d outside 1..254", i, n.Host.Name, x)
		}
		key, err := tun.GeneratePrivateKey()
		if err != nil {
			return nil, err
		}
		cfgs[i] = AgentConfig{PrivateKey: key, Address: MeshAddr(x), ListenPort: DefaultListenPort}
	}
	for i := range cfgs {
		for j, other := range cfgs {
			if i == j {
				continue
			}
			cfgs[i].Peers = append(cfgs[i].Peers, PeerConfig{
				PublicKey:           other.PrivateKey.PublicKey(),
				Endpoint:            netip.AddrPortFrom(nodes[j].Host.PublicAddr, uint16(other.ListenPort)),
				AllowedIPs:          []netip.Prefix{netip.PrefixFrom(other.Address, 24).Masked()},
				PersistentKeepalive: 25,
			})
		}
	}
	return cfgs, nil
}

// StartMesh starts a full mesh of agents, in parallel, and returns them in
// the order of nodes once every one has logged "mesh up".
func StartMesh(ctx context.Context, nodes []Node) ([]*Agent, error) {
	cfgs, err := MeshConfigs(nodes)
	if err != nil {
		return nil, err
	}
	agents := make([]*Agent, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			agents[i], errs[i] = n.Host.StartAgent(ctx, cfgs[i], n.Options)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return agents, err
		}
	}
	return agents, nil
}

// WithoutPeer returns a copy of cfg without the peer whose key is pub.
func (c AgentConfig) WithoutPeer(pub tun.Key) AgentConfig {
	out := c
	out.Peers = nil
	for _, p := range c.Peers {
		if p.PublicKey != pub {
			out.Peers = append(out.Peers, p)
		}
	}
	return out
}

// PublicKey is the agent's public key.
func (a *Agent) PublicKey() tun.Key { return a.Config.PrivateKey.PublicKey() }
