package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/tun"
)

// hostFirewall owns this machine's host rules in kernel mode, with or
// without Docker: the iptables chains of runtime.Rules (the mesh only
// through WireGuard or the bridge, agent ports to machine addresses,
// containers kept off the host and the LAN) and the security groups
// (runtime.Groups), compiled from the replicated state. It follows the
// machine, container and service records through the store's watch (the
// feed the resolver uses) and re-applies everything every resync, so a
// rule someone deleted comes back. It is also the runtime's Firewall: the
// runtime's own passes (after Docker restarts) apply the same rules.
// Netstack machines have no kernel path to the mesh and get none of it.
type hostFirewall struct {
	d      *Daemon
	log    *slog.Logger
	ipt    *runtime.IPTables
	groups *runtime.Groups

	poke chan struct{}

	mu         sync.Mutex
	lastRules  string // the restore script last applied
	lastGroups string // the nft script last applied
	// gen is the ruleset generation read after the last apply (genOK:
	// read at all); a resync finding it unchanged skips the apply.
	gen   uint32
	genOK bool
	// isolate are the protected containers cut off while nftables fails;
	// nil when the sets are in place.
	isolate []netip.Addr
}

// firewallResync is how often the rules are checked for changes made
// from outside (Docker restarting, an administrator flushing a chain) and
// re-applied if there were any. With iptables-nft the check is the
// nftables ruleset generation (runtime.RulesetGeneration), read in
// process: re-applying unconditionally ran iptables-restore, iptables and
// nft every 30 s, a third of an idle agent's CPU with 20 peers. With
// iptables-legacy, whose changes the generation does not show, the rules
// are re-applied every time, as before.
const firewallResync = 30 * time.Second

// firewallBackstop re-applies the rules this often even when the
// generation has not moved: a change that slipped in between an apply and
// the reading of the generation after it is repaired within it.
const firewallBackstop = 10 * time.Minute

// firewallSettle lets a burst of record changes (a scale-up) land before
// the sets are recompiled.
const firewallSettle = 20 * time.Millisecond

func (d *Daemon) startFirewall(ctx context.Context) *hostFirewall {
	if d.dev.Mode() == tun.ModeNetstack {
		return nil
	}
	f := &hostFirewall{d: d, log: d.log.With("component", "firewall"), ipt: &runtime.IPTables{},
		groups: &runtime.Groups{}, poke: make(chan struct{}, 1)}
	for _, prefix := range []string{record.MachinesPrefix, record.ContainersPrefix, record.ServicesPrefix} {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			f.follow(ctx, prefix)
		}()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f.run(ctx)
	}()
	return f
}

// follow pokes the firewall on every change under prefix.
func (f *hostFirewall) follow(ctx context.Context, prefix string) {
	for ctx.Err() == nil {
		changes, err := f.d.store.Watch(ctx, prefix)
		if err != nil {
			f.log.Error("watch records for the firewall", "prefix", prefix, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for range changes {
			f.kick()
		}
	}
}

func (f *hostFirewall) kick() {
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

func (f *hostFirewall) run(ctx context.Context) {
	tick := time.NewTicker(firewallResync)
	defer tick.Stop()
	force := true
	var lastForce time.Time
	for {
		if force {
			lastForce = time.Now()
		}
		if err := f.sync(ctx, force); err != nil && ctx.Err() == nil {
			f.log.Warn("host firewall not applied; retrying", "err", err)
		}
		force = false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			force = f.resyncDue(ctx, time.Since(lastForce))
		case <-f.poke:
			select {
			case <-ctx.Done():
				return
			case <-time.After(firewallSettle):
			}
		}
	}
}

// resyncDue reports whether the periodic resync must re-apply everything:
// the ruleset changed since the last apply, or it cannot tell, or the
// backstop is due.
func (f *hostFirewall) resyncDue(ctx context.Context, sinceForced time.Duration) bool {
	if sinceForced >= firewallBackstop || !f.ipt.NFTBackend(ctx) {
		return true
	}
	gen, err := runtime.RulesetGeneration()
	if err != nil {
		f.log.Debug("nftables generation unreadable: re-applying the rules", "err", err)
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.genOK || gen != f.gen
}

// noteGeneration records the ruleset generation after an apply, so that
// the next resync skips it if nobody changed anything since. Under f.mu.
func (f *hostFirewall) noteGeneration() {
	gen, err := runtime.RulesetGeneration()
	f.gen, f.genOK = gen, err == nil
}

// Apply implements runtime.Firewall: the runtime's pass applies the whole
// of this machine's rules (r is the runtime's view of the same bridge).
func (f *hostFirewall) Apply(ctx context.Context, _ runtime.Rules) error { return f.sync(ctx, true) }

// Remove implements runtime.Firewall: only what the agent added.
func (f *hostFirewall) Remove(ctx context.Context, _ runtime.Rules) error {
	f.mu.Lock()
	f.lastRules, f.lastGroups = "", ""
	f.mu.Unlock()
	err := f.ipt.Remove(ctx, f.rules())
	if gerr := f.groups.Remove(ctx); err == nil {
		err = gerr
	}
	return err
}

// sync applies what changed (everything when force): the security
// groups first, since when nftables fails the iptables rules must cut
// their containers off (fail closed) in the same apply.
func (f *hostFirewall) sync(ctx context.Context, force bool) error {
	rules := f.rules()
	guards, problems := f.guards(ctx)
	for _, p := range problems {
		f.log.Warn("security group entry ignored", "err", p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var groupsErr error
	if guards != nil { // nil: the state could not be read; keep what is there
		gs := f.groups.Script(guards)
		if force || gs != f.lastGroups || f.isolate != nil {
			f.isolate = nil
			if err := f.groups.Apply(ctx, guards); err != nil {
				groupsErr = err
				f.lastGroups, f.genOK = "", false
				f.isolate = []netip.Addr{}
				for _, g := range guards {
					f.isolate = append(f.isolate, g.Protect...)
				}
				if len(f.isolate) > 0 {
					f.log.Error("security groups not enforced with nftables: their containers are cut off until they are",
						"containers", len(f.isolate), "err", err)
				} else if force {
					f.log.Warn("nftables table for security groups not in place (none is in use yet)", "err", err)
				}
			} else {
				if gs != f.lastGroups {
					f.log.Info("security groups applied", "guards", len(guards))
				}
				f.lastGroups = gs
				f.noteGeneration()
			}
		}
	}
	rules.Isolate = f.isolate
	script := rules.RestoreScript()
	if force || script != f.lastRules {
		if err := f.ipt.Apply(ctx, rules); err != nil {
			f.lastRules, f.genOK = "", false
			return err
		}
		f.lastRules = script
		f.noteGeneration()
	}
	return groupsErr
}

// rules are the kernel-mode host rules of this machine now (the ingress
// ports follow the machine's role).
func (f *hostFirewall) rules() runtime.Rules {
	d := f.d
	ports := []runtime.HostPort{{Proto: "tcp", Num: GossipPort}, {Proto: "udp", Num: GossipPort}, {Proto: "tcp", Num: MachineAPIPort}}
	if slices.Contains(d.snapshot().Roles, "ingress") {
		// Ingress machines pass ACME challenges to each other over the mesh.
		for _, a := range []struct{ addr, def string }{{d.opts.Ingress.HTTPAddr, ":80"}, {d.opts.Ingress.HTTPSAddr, ":443"}} {
			if p, ok := listenPort(a.addr, a.def); ok {
				ports = append(ports, runtime.HostPort{Proto: "tcp", Num: p})
			}
		}
	}
	return runtime.Rules{Subnet: d.state.Subnet.Prefix(), Mesh: meshaddr.Mesh(), Bridge: runtime.BridgeName,
		MeshInterface: d.dev.InterfaceName(), MTU: d.dev.MTU(), AgentPorts: ports,
		Join: meshaddr.Join(), JoinPort: tun.DefaultJoinPort, DNSPort: DNSPort}
}

// listenPort is the port of a listen address ("-" is off).
func listenPort(addr, def string) (uint16, bool) {
	if addr == "-" {
		return 0, false
	}
	if addr == "" {
		addr = def
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return uint16(n), err == nil && n > 0
}

// guards reads the state and compiles the security groups of the
// services with containers here; nil when the state cannot be read.
func (f *hostFirewall) guards(ctx context.Context) ([]runtime.Guard, []error) {
	machines, err := f.d.machines(ctx)
	if err != nil {
		f.log.Warn("firewall: machines not read", "err", err)
		return nil, nil
	}
	var containers []*record.Container
	var services []*record.Service
	for _, p := range []string{record.ContainersPrefix, record.ServicesPrefix} {
		recs, err := f.d.store.List(ctx, p)
		if err != nil {
			f.log.Warn("firewall: records not read", "prefix", p, "err", err)
			return nil, nil
		}
		for _, r := range recs {
			switch v := r.(type) {
			case *record.Container:
				containers = append(containers, v)
			case *record.Service:
				services = append(services, v)
			}
		}
	}
	g, problems := compileGuards(f.d.state.MachineID, machines, containers, services)
	if g == nil {
		g = []runtime.Guard{}
	}
	return g, problems
}

// compileGuards is the security groups of this machine (self): one guard
// per service that has an allow-from and containers here. The allowed
// sources are the service's own containers, the containers of the named
// services, the named machines' addresses and the ingress machines'
// addresses, all from the records of machines that are members (not
// revoked). An entry that does not parse allows nobody (and is reported):
// the service stays protected by the rest.
func compileGuards(self string, machines []*record.Machine, containers []*record.Container, services []*record.Service) ([]runtime.Guard, []error) {
	subnetOf := map[string]meshaddr.Subnet{}
	byName := map[string]netip.Addr{}
	var ingress []netip.Addr
	for _, m := range machines {
		s, err := meshaddr.ParseSubnet(m.Subnet)
		if err != nil {
			continue
		}
		subnetOf[m.ID] = s
		byName[m.Name] = s.MachineAddr()
		if slices.Contains(m.Roles, "ingress") {
			ingress = append(ingress, s.MachineAddr())
		}
	}
	ofService := map[string][]netip.Addr{}
	local := map[string][]netip.Addr{}
	for _, c := range containers {
		a, err := netip.ParseAddr(c.Address)
		s, member := subnetOf[c.MachineID]
		// A container's address must lie in its own machine's subnet, and
		// not be the machine's: a record claiming another address would
		// open the door to whoever holds that one.
		if err != nil || c.Service == "" || !member || !s.Prefix().Contains(a) || a == s.MachineAddr() {
			continue
		}
		ofService[c.Service] = append(ofService[c.Service], a)
		if c.MachineID == self {
			local[c.Service] = append(local[c.Service], a)
		}
	}
	var out []runtime.Guard
	var problems []error
	for _, svc := range services {
		if len(svc.AllowFrom) == 0 || len(local[svc.Name]) == 0 {
			continue
		}
		g := runtime.Guard{Service: svc.Name, Protect: local[svc.Name], Allow: slices.Clone(ofService[svc.Name])}
		for _, text := range svc.AllowFrom {
			a, err := record.ParseAllowFrom(text)
			if err != nil {
				problems = append(problems, err)
				continue
			}
			switch a.Kind {
			case record.AllowService:
				g.Allow = append(g.Allow, ofService[a.Name]...)
			case record.AllowMachine:
				if addr, ok := byName[a.Name]; ok {
					g.Allow = append(g.Allow, addr)
				}
			case record.AllowIngress:
				g.Allow = append(g.Allow, ingress...)
			}
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b runtime.Guard) int {
		if a.Service < b.Service {
			return -1
		}
		if a.Service > b.Service {
			return 1
		}
		return 0
	})
	return out, problems
}
