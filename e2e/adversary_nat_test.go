package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/tun"
)

// advRelayBudget is the relay_mbps that p, the relay, is configured with.
const advRelayBudget = 40

// TestAdversaryNAT: a member gone rogue (or anyone on the path) attacks
// the NAT layer of a network of four: p public (the relay, its budget set
// to advRelayBudget Mbit/s in nat.json), a and b behind endpoint-
// independent NATs (hole punched to each other), c behind a symmetric NAT
// (relayed through p), and x, a stranger on the internet where the rogue
// sits. It tries:
//
//   - relay replay: a relayed packet captured at the relay, on the way in
//     (a → p) and on the way out (p → the far end), sent again from x at
//     once, and again later from the original addresses (spoofed);
//   - a STUN flood at b's WireGuard port (spoofed as p, so it passes b's
//     NAT) while b searches for its direct path to a;
//   - a call-me-maybe, authentic (made with a's WireGuard key), asking p to
//     probe loopback, the mesh, multicast, link-local, a stranger and
//     another member, and one with 60 candidates.
//
// Each attempt must fail; the relayed and direct paths keep carrying
// traffic throughout.
func TestAdversaryNAT(t *testing.T) {
	ctx := context.Background()
	l := lab.Start(t)
	names := []struct {
		name string
		nat  lab.NATKind
	}{{"p", lab.NATNone}, {"a", lab.NATEndpointIndependent}, {"b", lab.NATEndpointIndependent}, {"c", lab.NATSymmetric}}
	f := &formed{lab: l, procs: make([]*lab.Process, len(names))}
	for _, n := range names {
		f.addNATHost(ctx, t, n.name, n.nat, true)
	}
	const P, A, B, C = 0, 1, 2, 3
	p := f.hosts[P]
	x := l.MustHost(t, "x", lab.HostOptions{})
	natJSON := fmt.Sprintf(`{"relay_mbps": %d}`, advRelayBudget)
	if err := os.WriteFile(filepath.Join(p.Dir, "lib", "nat.json"), []byte(natJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	f.startAgent(ctx, t, P, "init", "--name", "p", "--foreground")
	for i := 1; i < len(names); i++ {
		f.startAgent(ctx, t, i, "join", "--name", names[i].name, "--foreground", f.token(ctx, t, P))
	}
	f.waitAllAlive(ctx, t, 90*time.Second)
	want := func(x, y string) string {
		if pairKey(x, y) == [2]string{"a", "b"} || x == "p" || y == "p" {
			return "direct"
		}
		return "relayed"
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if _, err := testkit.Poll(pctx, "a↔b direct, p direct to all, c relayed", func() error {
		if _, miss := f.pathsSettled(ctx, t, want); miss != "" {
			return fmt.Errorf("%s", miss)
		}
		return nil
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	cancel()
	addr := map[string]netip.Addr{}
	for _, m := range f.machines(ctx, t, P) {
		addr[m.Name] = netip.MustParseAddr(m.Address)
	}
	legit := func(when string) {
		t.Helper()
		for _, pair := range [][2]int{{A, B}, {A, C}, {C, B}} {
			to := names[pair[1]].name
			if err := pingRetry(ctx, f.hosts[pair[0]], addr[to].String(), 20*time.Second); err != nil {
				t.Fatalf("%s: legitimate traffic %s → %s: %v", when, names[pair[0]].name, to, err)
			}
		}
	}
	legit("before the attacks")
	var tally attackTally

	// The relay's budget, in Mbit/s as configured: a → c is relayed by p.
	pst, err := f.mesh(ctx, t, P)
	if err != nil {
		t.Fatal(err)
	}
	relayed := advTransfer(t, f, A, C, addr["c"], 16<<20, 71)
	pAfter, err := f.mesh(ctx, t, P)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE relay budget: p configured relay_mbps=%d (shown %g Mbit/s); a→c relayed through p: %.1f Mbit/s; p refused %d datagrams over budget",
		advRelayBudget, pAfter.Relay.BudgetMbps, relayed, pAfter.Relay.RateLimited-pst.Relay.RateLimited)
	// Above the budget is a failure; well below it is TCP backing off from
	// the policer's drops (13.7 to 41 Mbit/s seen on a 2-core machine).
	if pAfter.Relay.BudgetMbps != advRelayBudget || relayed > advRelayBudget*1.1 || pAfter.Relay.RateLimited == pst.Relay.RateLimited {
		t.Errorf("relay budget: shown %g Mbit/s, a→c carried %.1f Mbit/s; want %d Mbit/s, the transfer not above it, and the budget enforced",
			pAfter.Relay.BudgetMbps, relayed, advRelayBudget)
	}

	t.Run("relay replay", func(t *testing.T) { advRelayReplay(ctx, t, f, x, &tally, addr) })
	legit("after the relay replays")
	t.Run("STUN flood during path search", func(t *testing.T) { advSTUNFlood(ctx, t, f, x, &tally) })
	legit("after the STUN flood")
	t.Run("call-me-maybe with foreign candidates", func(t *testing.T) { advCallMeMaybe(ctx, t, f, x, &tally, addr) })
	legit("after the call-me-maybe")
	if _, miss := f.pathsSettled(ctx, t, want); miss != "" {
		t.Errorf("after the attacks: %s", miss)
	}
	tally.report(t, "nat")
}

// advRelayReplay captures relay packets at p and replays them.
func advRelayReplay(ctx context.Context, t *testing.T, f *formed, x *lab.Host, tally *attackTally, addr map[string]netip.Addr) {
	const P, A, C = 0, 1, 3
	p, a := f.hosts[P], f.hosts[A]
	// Arm both captures at the relay, then make a → c traffic: a forward
	// from a's public address, and a deliver leaving p (to a or c).
	in, err := p.StartCaptureUDP(ctx, "cap-forward", 51820, []byte{tun.RelayMarker, 1}, a.PublicAddr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.StartCaptureUDP(ctx, "cap-deliver", 51820, []byte{tun.RelayMarker, 2}, p.Addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := pingRetry(ctx, a, addr["c"].String(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	fwd, err := lab.CaptureResult(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	dlv, err := lab.CaptureResult(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	captured := time.Now()
	byPublic := map[netip.Addr]int{}
	for i, h := range f.hosts {
		byPublic[h.PublicAddr] = i
	}
	type copyOf struct {
		what   string
		pkt    []byte
		from   netip.AddrPort // the original source
		to     netip.AddrPort // where it went (the target's public endpoint)
		target int            // the host that receives it
	}
	var copies []copyOf
	for _, cp := range []struct {
		what string
		c    lab.Captured
	}{{"forward a→p", fwd}, {"deliver p→far end", dlv}} {
		pkt, err := cp.c.Payload()
		if err != nil {
			t.Fatal(err)
		}
		to, from := netip.MustParseAddrPort(cp.c.To), netip.MustParseAddrPort(cp.c.From)
		target, ok := byPublic[to.Addr()]
		if !ok {
			t.Fatalf("%s went to %v, nobody's public address", cp.what, to)
		}
		copies = append(copies, copyOf{cp.what, pkt, from, to, target})
		t.Logf("captured %s: %d bytes, %v → %v (seq %x)", cp.what, len(pkt), from, to, pkt[20:28])
	}
	// replay sends one copy (from spoof) and reports whether the target's
	// kernel received it and how the target's relay counted it.
	replay := func(cp copyOf, from netip.AddrPort) (arrived uint64, replayed, stale uint64) {
		t.Helper()
		h := f.hosts[cp.target]
		seq := hex.EncodeToString(cp.pkt[20:28])
		table := fmt.Sprintf("advrelay%d", time.Now().UnixNano()%1e9)
		if _, err := h.Run(ctx, "nft", fmt.Sprintf("add table inet %[1]s; add chain inet %[1]s in { type filter hook input priority -300; }; "+
			"add rule inet %[1]s in udp dport 51820 @th,224,64 0x%[2]s counter", table, seq)); err != nil {
			t.Fatal(err)
		}
		before, err := f.mesh(ctx, t, cp.target)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.SendSpoofedUDP(ctx, from, cp.to, cp.pkt, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		after, err := f.mesh(ctx, t, cp.target)
		if err != nil {
			t.Fatal(err)
		}
		return nftCount(ctx, t, h, table), after.Relay.Replayed - before.Relay.Replayed, after.Relay.Stale - before.Relay.Stale
	}
	// At once: from a stranger's address, where the target is on the
	// internet (a NATed target's router drops a stranger's datagrams before
	// any agent sees them), and from the original address (spoofed).
	stranger := netip.AddrPortFrom(x.Addr, 40123)
	for _, cp := range copies {
		target := f.hosts[cp.target]
		sources := []netip.AddrPort{cp.from}
		if target.Router == nil {
			sources = append([]netip.AddrPort{stranger}, sources...)
		}
		for _, from := range sources {
			arrived, replayed, stale := replay(cp, from)
			if arrived == 0 {
				t.Fatalf("%s replayed from %v never reached %s", cp.what, from, target.Name)
			}
			tally.try(t, fmt.Sprintf("%s replayed at once from %v", cp.what, from), replayed+stale == 0,
				fmt.Sprintf("%s counted %d replayed, %d stale", target.Name, replayed, stale))
		}
	}
	// Later, from the original addresses: past the 30 s window of the
	// sequence number's second.
	time.Sleep(time.Until(captured.Add(35 * time.Second)))
	for _, cp := range copies {
		arrived, replayed, stale := replay(cp, cp.from)
		if arrived == 0 {
			t.Fatalf("%s replayed from its original source %v never reached %s", cp.what, cp.from, f.hosts[cp.target].Name)
		}
		tally.try(t, cp.what+" replayed 35 s later from its original address", stale == 0,
			fmt.Sprintf("%s counted %d replayed, %d stale", f.hosts[cp.target].Name, replayed, stale))
	}
}

// advSTUNFlood measures b's search for a direct path to a (after a
// restart of b's agent) without and then during a flood of STUN binding
// requests at b's WireGuard port, sent from x but claiming p's address so
// that b's NAT lets them in as replies.
func advSTUNFlood(ctx context.Context, t *testing.T, f *formed, x *lab.Host, tally *attackTally) {
	const P, B = 0, 2
	search := func(label string) (time.Duration, api.MeshStatus) {
		t.Helper()
		f.procs[B].Signal(syscall.SIGTERM)
		f.procs[B].Wait(ctx)
		start := time.Now()
		f.startAgent(ctx, t, B, "agent")
		var firstDirect time.Duration
		var st api.MeshStatus
		testkit.Eventually(t, label+": b → a direct", 30*time.Second, func() error {
			var err error
			if st, err = f.mesh(ctx, t, B); err != nil {
				return err
			}
			for _, p := range st.Peers {
				if p.Machine == "a" && p.Path == "direct" && p.FirstDirect > 0 {
					firstDirect = p.FirstDirect
					return nil
				}
			}
			return fmt.Errorf("not yet: %+v", st.Peers)
		})
		t.Logf("%s: b's first search found a direct path to a in %v (%v after the restart)", label, firstDirect, time.Since(start).Round(100*time.Millisecond))
		return firstDirect, st
	}
	quiet, _ := search("no flood")
	target := netip.AddrPortFrom(f.hosts[B].PublicAddr, 51820)
	claim := netip.AddrPortFrom(f.hosts[P].Addr, 51820)
	const pps, floodFor = 20000, 25 * time.Second
	flood, err := x.StartSTUNFlood(ctx, "stunflood", target, claim, pps, floodFor)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	flooded, st := search("during the flood")
	res, err := lab.FloodResultOf(ctx, flood)
	if err != nil {
		t.Fatal(err)
	}
	if st, err = f.mesh(ctx, t, B); err != nil { // the counters over the whole flood
		t.Fatal(err)
	}
	t.Logf("FIGURE path search b→a (two endpoint-independent NATs): %v without a flood, %v during %d STUN requests/s (%d sent in %.1f s); b's STUN since its restart: received %d, answered %d, limited %d; socket control %d",
		quiet, flooded, pps, res.Sent, res.Seconds, st.STUN.Received, st.STUN.Answered, st.STUN.Limited, st.Socket.Control)
	if st.STUN.Limited == 0 {
		t.Fatalf("the flood never reached b's agent (nothing limited): %+v", st.STUN)
	}
	tally.try(t, "STUN flood at b during its path search", flooded > quiet+3*time.Second || flooded > 15*time.Second,
		fmt.Sprintf("direct after %v (without the flood %v)", flooded, quiet))
}

// advCallMeMaybe sends p two call-me-maybe messages made with a's key.
func advCallMeMaybe(ctx context.Context, t *testing.T, f *formed, x *lab.Host, tally *attackTally, addr map[string]netip.Addr) {
	const P, A, B = 0, 1, 2
	p, a, b := f.hosts[P], f.hosts[A], f.hosts[B]
	var state struct {
		Key tun.Key `json:"wireguard_private_key"`
	}
	raw, err := os.ReadFile(filepath.Join(a.Dir, "lib", "machine.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &state); err != nil || state.Key.IsZero() {
		t.Fatalf("a's WireGuard key from machine.json: %v", err)
	}
	var pKey tun.Key
	st, err := f.mesh(ctx, t, A)
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range st.Peers {
		if peer.Machine == "p" {
			if pKey, err = tun.ParseKey(peer.PublicKey); err != nil {
				t.Fatal(err)
			}
		}
	}
	pEP := netip.AddrPortFrom(p.Addr, 51820)
	send := func(cands []string) {
		t.Helper()
		msg := rogueCallMeMaybe(t, state.Key, pKey, cands)
		if err := x.SendSpoofedUDP(ctx, netip.AddrPortFrom(x.Addr, 40124), pEP, msg, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Counters: on the internet for what leaves p towards others, in p
	// for what would never leave it.
	onNet := func(expr string) *lab.Counter {
		cn, err := f.lab.CountOnInternet(ctx, fmt.Sprintf("ip saddr %s %s", p.Addr, expr))
		if err != nil {
			t.Fatal(err)
		}
		return cn
	}
	type target struct {
		what, cand string
		count      func() uint64
	}
	inP := func(expr string) func() uint64 {
		table := fmt.Sprintf("advcmm%d", time.Now().UnixNano()%1e9)
		if _, err := p.Run(ctx, "nft", fmt.Sprintf("add table inet %[1]s; add chain inet %[1]s out { type filter hook output priority -300; }; "+
			"add rule inet %[1]s out %[2]s counter", table, expr)); err != nil {
			t.Fatal(err)
		}
		return func() uint64 { return nftCount(ctx, t, p, table) }
	}
	counted := func(cn *lab.Counter) func() uint64 {
		return func() uint64 {
			n, err := cn.Packets(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	meshCand := netip.AddrPortFrom(addr["b"], 51820)
	bad := []target{
		{"loopback", "127.0.0.1:51820", inP("ip daddr 127.0.0.0/8 udp dport 51820")},
		{"the mesh (b's mesh address)", meshCand.String(), inP("ip daddr 10.210.0.0/16 udp dport 51820")},
		{"multicast", "224.0.0.251:5353", inP("ip daddr 224.0.0.0/4")},
		{"link-local", "169.254.1.1:51820", inP("ip daddr 169.254.0.0/16")},
		{"a stranger on the internet (x)", netip.AddrPortFrom(x.Addr, 9999).String(), counted(onNet(fmt.Sprintf("ip daddr %s udp dport 9999", x.Addr)))},
		{"another member (b's public address)", netip.AddrPortFrom(b.PublicAddr, 51821).String(), counted(onNet(fmt.Sprintf("ip daddr %s udp dport 51821", b.PublicAddr)))},
	}
	control := counted(onNet(fmt.Sprintf("ip daddr %s udp dport 40999", a.PublicAddr)))
	before, err := f.mesh(ctx, t, P)
	if err != nil {
		t.Fatal(err)
	}
	cands := []string{netip.AddrPortFrom(a.PublicAddr, 40999).String()} // a's own address, a new port: plausible
	for _, tg := range bad {
		cands = append(cands, tg.cand)
	}
	send(cands)
	time.Sleep(5 * time.Second) // a search lasts 4 s
	after, err := f.mesh(ctx, t, P)
	if err != nil {
		t.Fatal(err)
	}
	if control() == 0 {
		t.Fatalf("p never probed a's address at the new port: the call-me-maybe was not taken as a's (STUN %+v)", after.STUN)
	}
	for _, tg := range bad {
		n := tg.count()
		tally.try(t, "call-me-maybe: probe "+tg.what+" "+tg.cand, n > 0, fmt.Sprintf("%d datagrams sent there", n))
	}
	t.Logf("p filtered %d call-me-maybe candidates, probed a's new port %d times", after.STUN.Filtered-before.STUN.Filtered, control())
	if got := after.STUN.Filtered - before.STUN.Filtered; got < uint64(len(bad)) {
		t.Errorf("p counted %d filtered candidates, want at least %d", got, len(bad))
	}

	// 60 candidates at a's own address (as many as one datagram holds):
	// at most 16 are read.
	many := counted(onNet(fmt.Sprintf("ip daddr %s udp dport 41000-41059", a.PublicAddr)))
	cands = cands[:0]
	for port := 41000; port < 41060; port++ {
		cands = append(cands, netip.AddrPortFrom(a.PublicAddr, uint16(port)).String())
	}
	send(cands)
	time.Sleep(5 * time.Second)
	n := many()
	// p sends each candidate it keeps one probe and its own call-me-maybe.
	tally.try(t, "call-me-maybe with 60 candidates", n > 2*16, fmt.Sprintf("%d datagrams sent to them (at most 16 candidates read, two datagrams each)", n))
}

// rogueCallMeMaybe makes, as a rogue holding from's WireGuard key would
// from the wire format alone, an authentic call-me-maybe for to: STUN
// binding indication, USERNAME "uc1:<from id>:<to id>" (ids: the first 8
// bytes of the WireGuard public keys, hex), the sender's clock, the
// candidates, MESSAGE-INTEGRITY keyed with BLAKE2s(X25519(from, to),
// label, the two public keys in order), FINGERPRINT.
func rogueCallMeMaybe(t *testing.T, from, to tun.Key, cands []string) []byte {
	t.Helper()
	shared, err := curve25519.X25519(from[:], to[:])
	if err != nil {
		t.Fatal(err)
	}
	self := from.PublicKey()
	lo, hi := self, to
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	h, _ := blake2s.New256(shared)
	h.Write([]byte("uncloud nat probe v1"))
	h.Write(lo[:])
	h.Write(hi[:])
	key := h.Sum(nil)
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixNano()))
	msg, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication),
		stun.NewUsername("uc1:"+hex.EncodeToString(self[:8])+":"+hex.EncodeToString(to[:8])),
		rawAttr{0xC0A1, ts[:]}, rawAttr{0xC0A2, []byte(strings.Join(cands, ","))}, rawAttr{0xC0A3, []byte("endpoint-independent")},
		stun.NewShortTermIntegrity(string(key)), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Raw
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (r rawAttr) AddTo(m *stun.Message) error { m.Add(r.t, r.v); return nil }

var nftCounterRE = regexp.MustCompile(`counter packets (\d+)`)

// nftCount reads the one counter of an nftables table in h.
func nftCount(ctx context.Context, t *testing.T, h *lab.Host, table string) uint64 {
	t.Helper()
	out, err := h.Run(ctx, "nft", "list", "table", "inet", table)
	if err != nil {
		t.Fatal(err)
	}
	m := nftCounterRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in table %s on %s: %s", table, h.Name, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// advTransfer sends size bytes from host i to host j's mesh address and
// returns the receiver's Mbit/s, checking that everything arrived intact.
func advTransfer(t *testing.T, f *formed, i, j int, to netip.Addr, size int64, seed uint64) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	listen := netip.AddrPortFrom(to, transferPort)
	sink, err := f.hosts[j].StartSink(ctx, fmt.Sprintf("sink%d", seed), listen, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := f.hosts[i].Send(ctx, listen, size, seed, lab.DialOptions{Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatalf("%s → %s: %v", f.hosts[i].Name, f.hosts[j].Name, err)
	}
	got, err := sink.Result(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Bytes != size || got.SHA256 != sent.SHA256 {
		t.Fatalf("%s → %s: sent %d bytes %s, received %d bytes %s", f.hosts[i].Name, f.hosts[j].Name, size, sent.SHA256, got.Bytes, got.SHA256)
	}
	return got.Mbps()
}
