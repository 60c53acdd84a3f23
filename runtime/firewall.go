package runtime

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// Firewall installs and removes the host rules of a machine's bridge.
// Apply is idempotent: it replaces the contents of the agent's own chains
// and adds a jump to each only where none exists, so repeating it (every
// resync, after Docker restarts, after the agent was killed) leaves one
// copy of everything. Remove takes out only what Apply added.
type Firewall interface {
	Apply(ctx context.Context, r Rules) error
	Remove(ctx context.Context, r Rules) error
}

// Rules describe what the host must do for one machine's bridge and, in
// kernel mode, for its mesh interface.
type Rules struct {
	Subnet netip.Prefix // the machine's /24
	Mesh   netip.Prefix // meshaddr.Mesh()
	Bridge string       // uncloud-br
	// MeshInterface is the WireGuard interface; empty in netstack mode
	// (no kernel path to the mesh: only internet access and DNS rules).
	MeshInterface string
	MTU           int
	// AgentPorts are the agent's own ports on the machine address
	// (gossip, machine API, the ingress's on an ingress machine): from
	// the mesh, only machine addresses (x.x.x.1) reach them.
	AgentPorts []HostPort
	// Join is the join range (meshaddr.Join()) and JoinPort the one port
	// it may reach; zero values leave the join range to tun's filter.
	Join     netip.Prefix
	JoinPort uint16
	// DNSPort is the resolver's port on the machine address (any mesh
	// source); zero means 53.
	DNSPort uint16
	// Isolate are containers whose security group could not be put in
	// place (no nft): new connections to them are dropped, whoever
	// opens them, until it can. Fail closed.
	Isolate []netip.Addr
	// Tag, if set, names the chains UNCLOUD-<Tag>-*, for tests.
	Tag string
}

// HostPort is a port on the host: Proto is "tcp" or "udp".
type HostPort struct {
	Proto string
	Num   uint16
}

func (p HostPort) String() string { return fmt.Sprintf("%d/%s", p.Num, p.Proto) }

// machineSources matches the machine addresses of the mesh, x.x.x.1 of
// every /24 (a non-contiguous mask, which iptables accepts): WireGuard
// lets a peer send only from its own /24, and every machine drops packets
// from its bridge that claim its gateway's address, so x.x.x.1 arriving
// on the mesh interface is that machine's host.
func (r Rules) machineSources() string {
	a := r.Mesh.Masked().Addr().As4()
	return fmt.Sprintf("%d.%d.0.1/255.255.0.255", a[0], a[1])
}

// privateRanges are destinations a container may not be forwarded to
// except through the mesh: the host's LAN and its other Docker networks
// live there. The mesh itself is 10.210/16 and is handled before.
var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"}

func (r Rules) chain(name string) string {
	if r.Tag != "" {
		return "UNCLOUD-" + r.Tag + "-" + name
	}
	return "UNCLOUD-" + name
}

// Chain is one of the agent's chains: its table, its name, the built-in
// (or Docker's) chain that jumps to it, and its rules in iptables syntax.
type Chain struct {
	Table string
	Name  string
	// From lists the chains that may hold the jump, best first: DOCKER-USER
	// exists only where Docker manages iptables.
	From  []string
	Rules []string
}

// Chains are the agent's rules for r. Why each exists:
//   - raw: a packet arriving on the bridge with a source outside the
//     machine's /24, or with the gateway's (the machine's own) address,
//     is dropped before routing: a container cannot pose as another
//     machine's containers, as a mesh address or as its host. In kernel
//     mode the mesh (container subnets and machine addresses) is reached
//     only through WireGuard, the bridge or loopback: a LAN neighbour
//     that routes 10.210.X.0/24 to this host is dropped here, before
//     Docker's rules (Docker ≥ 28's `nat-unprotected` gateway mode would
//     let it reach every container port), and so is a container of
//     another Docker network (its traffic to the mesh would otherwise be
//     masqueraded behind the machine address). Nothing arriving on
//     WireGuard may go anywhere but the mesh: a member cannot route
//     through this host into its LAN or to the internet.
//   - filter, from DOCKER-USER: Docker's FORWARD policy is DROP; mesh
//     traffic between the bridge and the WireGuard interface is accepted
//     both ways with its addresses intact; anything else from WireGuard is
//     dropped (published ports of other Docker networks included, which
//     Docker DNATs before routing). Containers reach the internet, but
//     that rule RETURNs, so Docker's isolation chains still keep them
//     off the host's other networks; private destinations (the LAN,
//     other Docker networks) are dropped outright. DOCKER-USER is the
//     chain Docker promises to leave alone.
//   - filter INPUT: in kernel mode the host answers the mesh only where
//     it must: the join port to the join range, the agent's ports to
//     machine addresses, DNS to any mesh source, ping; machines may reach
//     the rest as the host's own policy says (RETURN); containers, of
//     this machine or any other, reach nothing else on any of the host's
//     addresses (sshd, databases, published ports of other networks).
//     Containers may ask the machine's resolver even on a host whose
//     INPUT policy is strict.
//   - nat: mesh destinations leave unchanged (ACCEPT ends the nat table,
//     so no later MASQUERADE sees them); everything else from the /24 is
//     masqueraded, since Docker's own masquerade is off for this network.
//   - mangle: TCP SYNs crossing the tunnel get their MSS clamped to the
//     tunnel MTU, for hosts whose containers' MTU is larger.
func (r Rules) Chains() []Chain {
	sub, mesh, br, wg := r.Subnet.Masked().String(), r.Mesh.Masked().String(), r.Bridge, r.MeshInterface
	gw := r.Subnet.Masked().Addr().Next().String()
	mss := r.MTU - 40
	dns := r.DNSPort
	if dns == 0 {
		dns = 53
	}
	raw := Chain{Table: "raw", Name: r.chain("RAW"), From: []string{"PREROUTING"}, Rules: []string{
		fmt.Sprintf("-i %s ! -s %s -j DROP", br, sub),
		fmt.Sprintf("-i %s -s %s -j DROP", br, gw), // the gateway is the host: never a container
	}}
	if wg != "" {
		raw.Rules = append(raw.Rules,
			fmt.Sprintf("-i %s ! -d %s -j DROP", wg, mesh),
			fmt.Sprintf("-i %s -j RETURN", wg),
			fmt.Sprintf("-i %s -j RETURN", br),
			"-i lo -j RETURN",
			fmt.Sprintf("-d %s -j DROP", mesh),
			fmt.Sprintf("-s %s -j DROP", mesh))
	}
	fwd := Chain{Table: "filter", Name: r.chain("FWD"), From: []string{"DOCKER-USER", "FORWARD"}}
	fwd.Rules = append(fwd.Rules, fmt.Sprintf("-i %s ! -s %s -j DROP", br, sub))
	for _, a := range r.Isolate {
		fwd.Rules = append(fwd.Rules, fmt.Sprintf("-o %s -d %s -m conntrack --ctstate NEW -j DROP", br, a))
	}
	if wg != "" {
		fwd.Rules = append(fwd.Rules,
			fmt.Sprintf("-i %s -o %s -s %s -d %s -j ACCEPT", br, wg, sub, mesh),
			fmt.Sprintf("-i %s -o %s -s %s -d %s -j ACCEPT", wg, br, mesh, sub),
			fmt.Sprintf("-i %s -j DROP", wg))
	}
	fwd.Rules = append(fwd.Rules, fmt.Sprintf("-i %s ! -o %s -d %s -j DROP", br, br, mesh))
	for _, p := range privateRanges {
		fwd.Rules = append(fwd.Rules, fmt.Sprintf("-i %s ! -o %s -d %s -j DROP", br, br, p))
	}
	fwd.Rules = append(fwd.Rules,
		fmt.Sprintf("-i %s ! -o %s -s %s ! -d %s -j RETURN", br, br, sub, mesh),
		fmt.Sprintf("-o %s ! -s %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", br, mesh))
	in := Chain{Table: "filter", Name: r.chain("IN"), From: []string{"INPUT"}}
	for _, proto := range []string{"udp", "tcp"} {
		in.Rules = append(in.Rules, fmt.Sprintf("-i %s -s %s -d %s -p %s --dport %d -j ACCEPT", br, sub, gw, proto, dns))
	}
	if wg != "" {
		in.Rules = append(in.Rules, r.hostInput(br, wg, sub, gw, dns)...)
	}
	nat := Chain{Table: "nat", Name: r.chain("NAT"), From: []string{"POSTROUTING"}, Rules: []string{
		fmt.Sprintf("-s %s -d %s -j ACCEPT", sub, mesh),
		fmt.Sprintf("-s %s ! -o %s -j MASQUERADE", sub, br),
	}}
	chains := []Chain{raw, fwd, in, nat}
	if wg != "" {
		chains = append(chains, Chain{Table: "mangle", Name: r.chain("MSS"), From: []string{"FORWARD"}, Rules: []string{
			fmt.Sprintf("-i %s -o %s -p tcp --tcp-flags SYN,RST SYN -m tcpmss --mss %d:65535 -j TCPMSS --set-mss %d", br, wg, mss+1, mss),
			fmt.Sprintf("-i %s -o %s -p tcp --tcp-flags SYN,RST SYN -m tcpmss --mss %d:65535 -j TCPMSS --set-mss %d", wg, br, mss+1, mss),
		}})
	}
	return chains
}

// hostInput are the kernel-mode INPUT rules after the bridge's DNS
// accepts: what the mesh and the containers may reach on the host itself.
func (r Rules) hostInput(br, wg, sub, gw string, dns uint16) []string {
	machines := r.machineSources()
	var out []string
	if r.Join.IsValid() && r.JoinPort != 0 {
		out = append(out,
			fmt.Sprintf("-i %s -s %s -d %s -p tcp --dport %d -j ACCEPT", wg, r.Join.Masked(), gw, r.JoinPort),
			fmt.Sprintf("-i %s -s %s -j DROP", wg, r.Join.Masked()))
	}
	for _, proto := range []string{"udp", "tcp"} {
		out = append(out, fmt.Sprintf("-i %s -d %s -p %s --dport %d -j ACCEPT", wg, gw, proto, dns))
	}
	byProto := map[string][]string{}
	for _, p := range r.AgentPorts {
		byProto[p.Proto] = append(byProto[p.Proto], strconv.Itoa(int(p.Num)))
	}
	for _, proto := range []string{"tcp", "udp"} {
		if ports := byProto[proto]; len(ports) > 0 {
			out = append(out, fmt.Sprintf("-i %s -s %s -d %s -p %s -m multiport --dports %s -j ACCEPT",
				wg, machines, gw, proto, strings.Join(ports, ",")))
		}
	}
	out = append(out,
		fmt.Sprintf("-i %s -s %s -j RETURN", wg, machines),
		fmt.Sprintf("-i %s -p icmp --icmp-type echo-request -j ACCEPT", wg),
		fmt.Sprintf("-i %s -p icmp --icmp-type echo-request -j ACCEPT", br),
		fmt.Sprintf("-i %s -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", wg),
		fmt.Sprintf("-i %s -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", br),
		fmt.Sprintf("-i %s -j DROP", wg),
		fmt.Sprintf("-i %s -j DROP", br))
	return out
}

// RestoreScript is the iptables-restore --noflush input that creates or
// replaces the contents of the agent's chains (declaring a chain flushes
// it), leaving every other chain as it is.
func (r Rules) RestoreScript() string {
	var b strings.Builder
	byTable := map[string][]Chain{}
	var order []string
	for _, c := range r.Chains() {
		if _, ok := byTable[c.Table]; !ok {
			order = append(order, c.Table)
		}
		byTable[c.Table] = append(byTable[c.Table], c)
	}
	for _, t := range order {
		fmt.Fprintf(&b, "*%s\n", t)
		for _, c := range byTable[t] {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
		}
		for _, c := range byTable[t] {
			for _, rule := range c.Rules {
				fmt.Fprintf(&b, "-A %s %s\n", c.Name, rule)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// IPTables applies Rules with the iptables commands (the nft or legacy
// backend, whichever the host's Docker uses, since both go through the
// same iptables binary).
type IPTables struct {
	// Binary defaults to "iptables"; Restore to "iptables-restore".
	Binary, Restore string
	// Netns, if set, runs them in that named network namespace (tests).
	Netns string
	mu    sync.Mutex

	backend    sync.Once
	nftBackend bool
}

// NFTBackend reports whether the iptables binary is the nf_tables one
// (iptables-nft, Debian's default): then every change to its rules, by
// anyone, moves RulesetGeneration. Asked once (iptables -V).
func (f *IPTables) NFTBackend(ctx context.Context) bool {
	f.backend.Do(func() {
		bin, _ := f.bins()
		out, err := f.command(ctx, bin, "-V").Output()
		f.nftBackend = err == nil && bytes.Contains(out, []byte("nf_tables"))
	})
	return f.nftBackend
}

// command is bin with args, in f.Netns if set.
func (f *IPTables) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	if f.Netns != "" {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", f.Netns, bin}, args...)...)
	}
	return exec.CommandContext(ctx, bin, args...)
}

func (f *IPTables) bins() (string, string) {
	b, r := f.Binary, f.Restore
	if b == "" {
		b = "iptables"
	}
	if r == "" {
		r = "iptables-restore"
	}
	return b, r
}

// Apply implements Firewall.
func (f *IPTables) Apply(ctx context.Context, r Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	bin, restore := f.bins()
	if f.Netns == "" {
		if err := enableForwarding(); err != nil {
			return err
		}
	}
	cmd := f.command(ctx, restore, "-w", "--noflush")
	cmd.Stdin = strings.NewReader(r.RestoreScript())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install the uncloud chains with %s: %w: %s", restore, err, bytes.TrimSpace(out))
	}
	for _, c := range r.Chains() {
		from, err := f.jumpSource(ctx, bin, c)
		if err != nil {
			return err
		}
		if f.run(ctx, bin, "-t", c.Table, "-C", from, "-j", c.Name) == nil {
			continue
		}
		if err := f.run(ctx, bin, "-t", c.Table, "-I", from, "1", "-j", c.Name); err != nil {
			return fmt.Errorf("jump from %s/%s to %s: %w", c.Table, from, c.Name, err)
		}
	}
	return nil
}

// Remove implements Firewall: the jumps, then the agent's chains.
func (f *IPTables) Remove(ctx context.Context, r Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	bin, _ := f.bins()
	var firstErr error
	for _, c := range r.Chains() {
		for _, from := range c.From {
			for f.run(ctx, bin, "-t", c.Table, "-D", from, "-j", c.Name) == nil {
			}
		}
		if f.run(ctx, bin, "-t", c.Table, "-L", c.Name, "-n") != nil {
			continue // not there
		}
		if err := f.run(ctx, bin, "-t", c.Table, "-F", c.Name); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := f.run(ctx, bin, "-t", c.Table, "-X", c.Name); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// jumpSource is the first chain of c.From that exists.
func (f *IPTables) jumpSource(ctx context.Context, bin string, c Chain) (string, error) {
	for _, from := range c.From {
		if f.run(ctx, bin, "-t", c.Table, "-L", from, "-n") == nil {
			return from, nil
		}
	}
	return "", fmt.Errorf("none of the chains %v exists in table %s", c.From, c.Table)
}

func (f *IPTables) run(ctx context.Context, bin string, args ...string) error {
	out, err := f.command(ctx, bin, append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// enableForwarding turns on IPv4 forwarding, which Docker also needs;
// it is a host-wide switch, so it is never turned off again.
func enableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}
