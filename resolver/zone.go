package resolver

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

// TTL is the time to live of every answer, and of negative answers (the
// SOA minimum): short, so a stopped container or a partition leaves the
// answers quickly.
const TTL = 5

// Zone apexes. Everything under them is answered here and never forwarded.
const (
	apexInternal = "internal."
	apexReverse  = "210.10.in-addr.arpa."
	machineZone  = "machine.internal."
)

// maxRotations bounds the pre-packed orders of a name with many records:
// a name with n records gets min(n, maxRotations) orders, each starting
// at a different record.
const maxRotations = 16

// Input is what a zone is built from: the records as the store has them
// and whom this machine can reach.
type Input struct {
	Self       string // this machine's ID
	Machines   []*record.Machine
	Containers []*record.Container
	Services   []*record.Service
	// Reachable says whether this machine can reach a machine now; Self
	// is always reachable. Nil means every machine is.
	Reachable func(machineID string) bool
	Serial    uint32
}

// Name is one name of the zone, as `uncloud dns ls` shows it.
type Name struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Records []string `json:"records"`
	// Project is set for a name of a project's own view.
	Project string `json:"project,omitempty"`
}

// zone is an immutable, compiled view of the names: built off the hot
// path, swapped in atomically, read without locks.
type zone struct {
	nodes  map[string]*node
	apexes []*apex
	names  []Name // for listing, sorted
	// projects are the names a project's containers see besides nodes:
	// <service>.internal for each of the project's services (and their
	// nearest. and SRV names), by project; projectOf says which project
	// a container's address is in (the default project's are absent:
	// they see nodes as everyone does).
	projects  map[string]map[string]*node
	projectOf map[netip.Addr]string
}

// apex is one authoritative zone (internal., 210.10.in-addr.arpa.).
type apex struct {
	name string
	key  []byte // name, for lookups without allocation
	soa  *dns.SOA
	// nx is the NXDOMAIN body: the SOA in authority, packed without
	// compression so it fits behind any question.
	nx *packed
}

// node is one existing name: with records, or an empty non-terminal
// (answered NODATA, never NXDOMAIN).
type node struct {
	name    string
	apex    *apex
	answers []typed // by query type
	nodata  *packed
}

type typed struct {
	qtype uint16
	p     *packed
}

// packed is a pre-packed answer for one (name, type): the sections after
// the question, in one or more orders. Compression pointers in them point
// into the question, whose layout is the same for every spelling of the
// name (only the letter case may differ).
type packed struct {
	rcode      int
	an, ns, ar uint16
	bodies     [][]byte
	rrs        []dns.RR // answer records in canonical order, for listing
}

// lookup finds the answer for qtype at name (lowercase, fully
// qualified), or the NXDOMAIN of the apex it falls under; ok is false for
// names outside the zones.
func (z *zone) lookup(name string, qtype uint16, from netip.Addr) (p *packed, ok bool) {
	if n := z.projectNode(name, from); n != nil {
		return n.answer(qtype), true
	}
	if n := z.nodes[name]; n != nil {
		return n.answer(qtype), true
	}
	for _, a := range z.apexes {
		if inZone(name, a.name) {
			return a.nx, true
		}
	}
	return nil, false
}

// projectNode is the node of name in the view of the project whose
// container asks from, if that view has one; nil otherwise (the zone's
// own nodes answer).
func (z *zone) projectNode(name string, from netip.Addr) *node {
	if len(z.projectOf) == 0 {
		return nil
	}
	project, ok := z.projectOf[from.Unmap()]
	if !ok {
		return nil
	}
	return z.projects[project][name]
}

// inZone reports whether name (lowercase, fully qualified) is apex or
// below it.
func inZone(name, apex string) bool {
	return name == apex || (len(name) > len(apex) && strings.HasSuffix(name, apex) && name[len(name)-len(apex)-1] == '.')
}

// builder collects records per name and type before packing.
type builder struct {
	z      *zone
	groups map[string]map[uint16][][]dns.RR // name → type → groups rotated separately
	extra  map[string]map[uint16][]dns.RR   // additional section
	order  []string
	// projects build each project's own view; projectOf is what
	// becomes zone.projectOf.
	projects  map[string]*builder
	projectOf map[netip.Addr]string
}

func (b *builder) add(name string, rr dns.RR, group int) {
	t := rr.Header().Rrtype
	if b.groups[name] == nil {
		b.groups[name] = map[uint16][][]dns.RR{}
		b.order = append(b.order, name)
	}
	g := b.groups[name][t]
	for len(g) <= group {
		g = append(g, nil)
	}
	g[group] = append(g[group], rr)
	b.groups[name][t] = g
}

func (b *builder) addExtra(name string, t uint16, rr dns.RR) {
	if b.extra[name] == nil {
		b.extra[name] = map[uint16][]dns.RR{}
	}
	b.extra[name][t] = append(b.extra[name][t], rr)
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: TTL}
}

// liveContainer is a container the zone answers for.
type liveContainer struct {
	c       *record.Container
	machine string // the machine's DNS label
	addr    netip.Addr
	local   bool
}

// build compiles the zone. Records that cannot be named (a name that is
// not a DNS label, an address that does not parse) are left out and
// reported in skipped, so one bad record never hides the others.
func build(in Input) (z *zone, skipped []string) {
	reach := func(id string) bool {
		return id == in.Self || in.Reachable == nil || in.Reachable(id)
	}
	self := ""
	b := &builder{z: &zone{nodes: map[string]*node{}}, groups: map[string]map[uint16][][]dns.RR{},
		extra: map[string]map[uint16][]dns.RR{}, projects: map[string]*builder{}, projectOf: map[netip.Addr]string{}}

	// Machines: the name label, the mesh address.
	machines := map[string]string{} // id → label, only reachable, well-named machines
	for _, m := range sortedMachines(in.Machines) {
		label := strings.ToLower(m.Name)
		if !isLabel(label) {
			skipped = append(skipped, fmt.Sprintf("machine %s: name %q is not a DNS label", m.ID, m.Name))
			continue
		}
		subnet, err := meshaddr.ParseSubnet(m.Subnet)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("machine %s: %v", m.Name, err))
			continue
		}
		addr := subnet.MachineAddr()
		if m.ID == in.Self {
			self = label + "." + machineZone
		}
		if !reach(m.ID) {
			continue
		}
		if _, dup := machines[m.ID]; dup {
			continue
		}
		machines[m.ID] = label
		name := label + "." + machineZone
		b.add(name, &dns.A{Hdr: hdr(name, dns.TypeA), A: addr.AsSlice()}, 0)
		b.add(reverseName(addr), &dns.PTR{Hdr: hdr(reverseName(addr), dns.TypePTR), Ptr: name}, 0)
	}

	// Containers that run on reachable machines.
	services := map[string][]liveContainer{}
	for _, c := range sortedContainers(in.Containers) {
		mlabel, ok := machines[c.MachineID]
		if !ok || c.State != "running" {
			continue
		}
		addr, err := netip.ParseAddr(c.Address)
		if err != nil || !addr.Is4() {
			skipped = append(skipped, fmt.Sprintf("container %s on %s: address %q is not IPv4", c.Name, mlabel, c.Address))
			continue
		}
		lc := liveContainer{c: c, machine: mlabel, addr: addr, local: c.MachineID == in.Self}
		label := strings.ToLower(c.Name)
		if isLabel(label) {
			name := label + "." + mlabel + "." + machineZone
			b.add(name, &dns.A{Hdr: hdr(name, dns.TypeA), A: addr.AsSlice()}, 0)
			b.add(reverseName(addr), &dns.PTR{Hdr: hdr(reverseName(addr), dns.TypePTR), Ptr: name}, 0)
		} else {
			skipped = append(skipped, fmt.Sprintf("container %s on %s: name %q is not a DNS label", c.ID, mlabel, c.Name))
		}
		if c.Service != "" && c.Serves() { // the rule the ingress uses too
			svc := strings.ToLower(c.Service)
			services[svc] = append(services[svc], lc)
		}
	}

	// Services: a service record makes the name exist even with no live
	// container (NODATA, not NXDOMAIN, while it is scaled to zero or away).
	for _, s := range in.Services {
		svc := strings.ToLower(s.Name)
		if _, ok := services[svc]; !ok {
			services[svc] = nil
		}
	}
	skipped = append(skipped, b.services(services)...)

	if self == "" {
		self = "localhost."
	}
	for _, name := range []string{apexInternal, apexReverse} {
		a := &apex{name: name, key: []byte(name), soa: &dns.SOA{Hdr: hdr(name, dns.TypeSOA), Ns: self,
			Mbox: "hostmaster." + apexInternal, Serial: in.Serial, Refresh: 3600, Retry: 600,
			Expire: 86400, Minttl: TTL}}
		b.z.apexes = append(b.z.apexes, a)
		b.add(name, a.soa, 0)
		b.add(name, &dns.NS{Hdr: hdr(name, dns.TypeNS), Ns: self}, 0)
	}
	b.finish()
	return b.z, skipped
}

// services adds the names of the services, by service ID (package
// record: <name>.<project>, or the bare name in the default project):
//   - <name>.<project>.internal for every service, <name>.internal and
//     <name>.default.internal for the default project's;
//   - <name>.internal for a service no default one shadows, when one
//     project alone has that name (so a name is not lost to a host or a
//     default-project container just because its service is in a project);
//   - <name>.internal in each project's own view, for its containers.
func (b *builder) services(byID map[string][]liveContainer) (skipped []string) {
	byName := map[string][]string{} // name → IDs
	for _, id := range slices.Sorted(mapKeys(byID)) {
		name, project := record.SplitServiceID(id)
		if !isLabel(name) || name == "machine" || !isLabel(project) || project == "machine" {
			skipped = append(skipped, fmt.Sprintf("service %q: not a DNS label, or a reserved name", id))
			continue
		}
		byName[name] = append(byName[name], id)
		live := byID[id]
		if project == record.DefaultProject {
			b.service(name+"."+apexInternal, live)
			b.service(name+"."+record.DefaultProject+"."+apexInternal, live)
			continue
		}
		b.service(id+"."+apexInternal, live)
		pb := b.projects[project]
		if pb == nil {
			pb = &builder{z: &zone{nodes: map[string]*node{}, apexes: b.z.apexes}, groups: map[string]map[uint16][][]dns.RR{},
				extra: map[string]map[uint16][]dns.RR{}}
			b.projects[project] = pb
		}
		pb.service(name+"."+apexInternal, live)
		for _, lc := range live {
			b.projectOf[lc.addr] = project
		}
	}
	for _, name := range slices.Sorted(mapKeys(byName)) {
		if ids := byName[name]; len(ids) == 1 && record.ServiceProject(ids[0]) != record.DefaultProject {
			b.service(name+"."+apexInternal, byID[ids[0]])
		}
	}
	return skipped
}

// service adds name (e.g. web.internal.), nearest.<name> and the SRV
// names.
func (b *builder) service(name string, live []liveContainer) {
	nearest := "nearest." + name
	b.ensure(name)
	b.ensure(nearest)
	for _, lc := range live {
		b.add(name, &dns.A{Hdr: hdr(name, dns.TypeA), A: lc.addr.AsSlice()}, 0)
		group := 1
		if lc.local {
			group = 0
		}
		b.add(nearest, &dns.A{Hdr: hdr(nearest, dns.TypeA), A: lc.addr.AsSlice()}, group)
		label := strings.ToLower(lc.c.Name)
		if !isLabel(label) {
			continue // an SRV target needs a name
		}
		target := label + "." + lc.machine + "." + machineZone
		for _, p := range lc.c.Ports {
			proto := strings.ToLower(p.Protocol)
			switch proto {
			case "", "http", "https":
				proto = "tcp"
			case "tcp", "udp":
			default:
				continue
			}
			owners := []string{"_" + strconv.Itoa(int(p.Port)) + "._" + proto + "." + name}
			if n := strings.ToLower(p.Name); n != "" && isLabel(n) {
				owners = append(owners, "_"+n+"._"+proto+"."+name)
			}
			for _, o := range owners {
				b.add(o, &dns.SRV{Hdr: hdr(o, dns.TypeSRV), Priority: 0, Weight: 1, Port: p.Port, Target: target}, 0)
				b.addExtra(o, dns.TypeSRV, &dns.A{Hdr: hdr(target, dns.TypeA), A: lc.addr.AsSlice()})
			}
		}
	}
}

// ensure makes name exist, even with no records.
func (b *builder) ensure(name string) {
	if b.groups[name] == nil {
		b.groups[name] = map[uint16][][]dns.RR{}
		b.order = append(b.order, name)
	}
}

// finish creates every node and its ancestors up to the apex, and packs
// the answers.
func (b *builder) finish() {
	z := b.z
	for _, a := range z.apexes {
		if a.nx == nil { // a project's view shares the zone's apexes
			a.nx = packAnswer(a.name, dns.RcodeNameError, nil, []dns.RR{a.soa}, nil, false)
		}
	}
	apexOf := func(name string) *apex {
		for _, a := range z.apexes {
			if inZone(name, a.name) {
				return a
			}
		}
		return nil
	}
	newNode := func(name string) *node {
		a := apexOf(name)
		if a == nil {
			return nil
		}
		n := &node{name: name, apex: a}
		n.nodata = packAnswer(name, dns.RcodeSuccess, nil, []dns.RR{a.soa}, nil, true)
		z.nodes[name] = n
		// Empty non-terminals between the name and its apex exist too.
		for p := parent(name); p != "" && inZone(p, a.name) && z.nodes[p] == nil; p = parent(p) {
			e := &node{name: p, apex: a}
			e.nodata = packAnswer(p, dns.RcodeSuccess, nil, []dns.RR{a.soa}, nil, true)
			z.nodes[p] = e
		}
		return n
	}
	for _, name := range b.order {
		n := z.nodes[name]
		if n == nil {
			if n = newNode(name); n == nil {
				continue
			}
		}
		types := slices.Sorted(mapKeys(b.groups[name]))
		// A first, so ANY answers with addresses where there are some.
		slices.SortStableFunc(types, func(x, y uint16) int {
			if x == dns.TypeA {
				return -1
			}
			if y == dns.TypeA {
				return 1
			}
			return 0
		})
		for _, t := range types {
			groups := b.groups[name][t]
			var extra []dns.RR
			if b.extra[name] != nil {
				extra = b.extra[name][t]
			}
			p := &packed{rcode: dns.RcodeSuccess}
			p.bodies = packRotations(name, groups, extra)
			for _, g := range groups {
				p.rrs = append(p.rrs, g...)
			}
			p.an, p.ar = uint16(len(p.rrs)), uint16(len(extra))
			n.answers = append(n.answers, typed{qtype: t, p: p})
		}
	}
	// A name whose answers are all gone (a service with no live
	// container) has no A records: its A query is NODATA, by default.
	for _, name := range slices.Sorted(mapKeys(z.nodes)) {
		n := z.nodes[name]
		for _, t := range n.answers {
			if len(t.p.rrs) == 0 {
				continue
			}
			nm := Name{Name: name, Type: dns.TypeToString[t.qtype]}
			for _, rr := range t.p.rrs {
				nm.Records = append(nm.Records, rdataString(rr))
			}
			z.names = append(z.names, nm)
		}
	}
	// Each project's view: its own nodes, without the apexes (answered
	// from the zone, with the SOA and NS).
	for project, pb := range b.projects {
		pb.z.apexes = z.apexes
		pb.finish()
		for _, a := range z.apexes {
			delete(pb.z.nodes, a.name)
		}
		if z.projects == nil {
			z.projects, z.projectOf = map[string]map[string]*node{}, b.projectOf
		}
		z.projects[project] = pb.z.nodes
		for _, n := range pb.z.names {
			n.Project = project
			z.names = append(z.names, n)
		}
	}
	slices.SortStableFunc(z.names, func(a, b Name) int {
		return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Name, b.Name), strings.Compare(a.Type, b.Type))
	})
}

// packRotations packs min(n, maxRotations) orders of the records; each
// group (e.g. this machine's containers, then the others) rotates on its
// own and keeps its place.
func packRotations(name string, groups [][]dns.RR, extra []dns.RR) [][]byte {
	longest := 0
	for _, g := range groups {
		longest = max(longest, len(g))
	}
	n := min(max(longest, 1), maxRotations)
	out := make([][]byte, 0, n)
	for r := range n {
		var rrs []dns.RR
		for _, g := range groups {
			if len(g) == 0 {
				continue
			}
			start := (r * len(g) / n) % len(g)
			rrs = append(rrs, g[start:]...)
			rrs = append(rrs, g[:start]...)
		}
		out = append(out, packAnswer(name, dns.RcodeSuccess, rrs, nil, extra, true).bodies[0])
	}
	return out
}

// packAnswer packs one answer behind a canonical question and keeps what
// follows the question: the body that any spelling of the question fits.
func packAnswer(name string, rcode int, an, ns, ar []dns.RR, compress bool) *packed {
	m := &dns.Msg{Compress: compress, Question: []dns.Question{{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}},
		Answer: an, Ns: ns, Extra: ar}
	m.Rcode = rcode
	wire, err := m.Pack()
	if err != nil {
		// Only names and records built in this file get here: a failure
		// is a bug here, not bad input.
		panic(fmt.Sprintf("resolver: pack answer for %s: %v", name, err))
	}
	return &packed{rcode: rcode, an: uint16(len(an)), ns: uint16(len(ns)), ar: uint16(len(ar)),
		bodies: [][]byte{wire[12+len(name)+1+4:]}, rrs: an}
}

// parent is name without its first label; "" above the root.
func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return ""
	}
	return name[i+1:]
}

// isLabel accepts the labels the zone answers: lowercase letters, digits,
// '-' and '_', 1 to 63 of them, not starting or ending with '-'.
func isLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func reverseName(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0])
}

func rdataString(rr dns.RR) string {
	s := rr.String()
	h := rr.Header().String()
	return strings.TrimSpace(strings.TrimPrefix(s, h))
}

func sortedMachines(ms []*record.Machine) []*record.Machine {
	out := slices.Clone(ms)
	slices.SortFunc(out, func(a, b *record.Machine) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func sortedContainers(cs []*record.Container) []*record.Container {
	out := slices.Clone(cs)
	slices.SortFunc(out, func(a, b *record.Container) int {
		return strings.Compare(a.MachineID+"/"+a.ID, b.MachineID+"/"+b.ID)
	})
	return out
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
