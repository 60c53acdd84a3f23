package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// natZoo is the topology of issue 5, formed with init, token and join:
// p public; a and b behind home-router NATs (endpoint-independent mapping,
// only replies let in); c and d behind symmetric NATs (fully random ports,
// same filter; d runs in netstack mode); e public but dropping unsolicited
// inbound UDP; q public and open, a second machine that can relay for
// everyone.
var natZoo = []struct {
	name      string
	nat       lab.NATKind
	userspace bool // netstack mode: relaying is in the Bind, so it must work here too
}{
	{"p", lab.NATNone, false},
	{"a", lab.NATEndpointIndependent, false},
	{"b", lab.NATEndpointIndependent, false},
	{"c", lab.NATSymmetric, false},
	{"d", lab.NATSymmetric, true},
	{"e", lab.NATNone, false},
	{"q", lab.NATNone, false},
}

// wantDirect are the pairs that must end direct: everything with p; a↔b
// by hole punching; e with a and b once e has sent first (probing both
// ways at once does that); everything with q. Every other pair needs a
// relay.
var wantDirect = map[[2]string]bool{
	{"a", "p"}: true, {"b", "p"}: true, {"c", "p"}: true, {"d", "p"}: true, {"e", "p"}: true,
	{"a", "b"}: true, {"a", "e"}: true, {"b", "e"}: true,
	{"a", "q"}: true, {"b", "q"}: true, {"c", "q"}: true, {"d", "q"}: true, {"e", "q"}: true, {"p", "q"}: true,
}

func pairKey(x, y string) [2]string {
	if x > y {
		x, y = y, x
	}
	return [2]string{x, y}
}

func (f *formed) mesh(ctx context.Context, t *testing.T, i int) (api.MeshStatus, error) {
	t.Helper()
	out, err := f.uncloud(ctx, t, i, "mesh", "-o", "json")
	if err != nil {
		return api.MeshStatus{}, err
	}
	var st api.MeshStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("mesh on %s: %w\n%s", f.hosts[i].Name, err, out)
	}
	return st, nil
}

// pathsSettled reports, for every host, whether each peer's path is what
// want says (direct or relayed), and returns the first mismatch.
func (f *formed) pathsSettled(ctx context.Context, t *testing.T, want func(x, y string) string) (map[string]api.MeshStatus, string) {
	all := map[string]api.MeshStatus{}
	miss := ""
	for i, h := range f.hosts {
		st, err := f.mesh(ctx, t, i)
		if err != nil {
			return all, err.Error()
		}
		all[h.Name] = st
		if len(st.Peers) != len(f.hosts)-1 && miss == "" {
			miss = fmt.Sprintf("%s knows %d peers", h.Name, len(st.Peers))
		}
		for _, p := range st.Peers {
			w := want(h.Name, p.Machine)
			if p.Path != w && miss == "" {
				miss = fmt.Sprintf("%s → %s is %s (endpoint %s), want %s", h.Name, p.Machine, p.Path, p.Endpoint, w)
			}
			if p.Path == "relayed" && p.Via == "" && miss == "" {
				miss = fmt.Sprintf("%s → %s is relayed through an unnamed machine (%s)", h.Name, p.Machine, p.Endpoint)
			}
		}
	}
	return all, miss
}

func zooWant(x, y string) string {
	if wantDirect[pairKey(x, y)] {
		return "direct"
	}
	return "relayed"
}

// TestNATTraversal forms the NAT zoo, then checks that every pair reaches
// every other, that the pairs that can be direct are (a↔b hole punched),
// that the rest go through a relay and still carry a 10 MB transfer
// intact, and that a pair whose direct path is cut goes relayed and comes
// back to direct when the obstacle is removed. Times are logged as figures.
func TestNATTraversal(t *testing.T) {
	ctx := context.Background()
	l := lab.Start(t)
	f := &formed{lab: l, procs: make([]*lab.Process, len(natZoo))}
	// Other tests' labs sweep this one's directory once it is gone, so a
	// failure (or UNCLOUD_NAT_LOGS=1) keeps the agents' logs elsewhere.
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("UNCLOUD_NAT_LOGS") == "" {
			return
		}
		dir := filepath.Join(os.TempDir(), "uncloud-nat-e2e-logs")
		os.MkdirAll(dir, 0o755)
		for _, h := range f.hosts {
			if b, err := os.ReadFile(filepath.Join(h.Dir, "uncloud.log")); err == nil {
				os.WriteFile(filepath.Join(dir, h.Name+".log"), b, 0o644)
			}
		}
		t.Logf("agent logs copied to %s", dir)
	})
	idx := map[string]int{}
	for i, z := range natZoo {
		f.addNATHost(ctx, t, z.name, z.nat, true)
		idx[z.name] = i
	}
	if err := f.hosts[idx["e"]].DropUnsolicitedUDP(ctx); err != nil {
		t.Fatal(err)
	}

	f.startAgent(ctx, t, 0, "init", "--name", "p", "--foreground")
	var joinedB time.Time
	for i := 1; i < len(natZoo); i++ {
		tok := f.token(ctx, t, 0)
		args := []string{"join", "--name", natZoo[i].name, "--foreground", tok}
		if natZoo[i].userspace {
			args = append(args, "--userspace")
		}
		f.startAgent(ctx, t, i, args...)
		if natZoo[i].userspace {
			// Restart as a plain agent that exposes the transfer port (join
			// has no --expose): the state survives, the machine stays.
			f.procs[i].Signal(syscall.SIGTERM)
			f.procs[i].Wait(ctx)
			f.startAgent(ctx, t, i, "agent", "--userspace", "--expose", itoa(transferPort))
		}
		if natZoo[i].name == "b" {
			joinedB = time.Now()
		}
	}
	joined := time.Now()
	took := f.waitAllAlive(ctx, t, 90*time.Second)
	t.Logf("FIGURE all 7 machines alive with a handshake to every other: %v after the last join", took.Round(100*time.Millisecond))

	var (
		statuses          map[string]api.MeshStatus // every machine's view once the paths settled
		ms                []api.MachineInfo         // as p lists them
		addr              = map[string]netip.Addr{}
		a, b              = idx["a"], idx["b"]
		toRelay, toDirect time.Duration // a↔b cut: to relayed, and back to direct
		abDirect          time.Duration // a's router reboot: to a↔b direct again
	)

	if !t.Run("paths settle: direct where a hole can be punched, relayed otherwise; NATs classified", func(t *testing.T) {
		// Poll until every pair is as expected on both sides.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if _, err := testkit.Poll(pctx, "paths as expected on both sides of every pair", func() error {
			var miss string
			if statuses, miss = f.pathsSettled(ctx, t, zooWant); miss != "" {
				return errors.New(miss)
			}
			return nil
		}); err != nil {
			for n, st := range statuses {
				t.Logf("%s (NAT %s): %+v", n, st.NAT, st.Peers)
			}
			t.Fatalf("paths not settled 2 min after the handshakes: %v", err)
		}
		t.Logf("FIGURE all paths as expected %v after the last join", time.Since(joined).Round(100*time.Millisecond))
		for _, z := range natZoo {
			st := statuses[z.name]
			var parts []string
			for _, p := range st.Peers {
				s := p.Machine + "=" + p.Path
				if p.Via != "" {
					s += "/" + p.Via
				}
				parts = append(parts, s)
			}
			t.Logf("%s: NAT %s, reflexive %v: %s", z.name, st.NAT, st.Reflexive, strings.Join(parts, " "))
		}
		// NAT types: public machines see their own address from outside;
		// the NATed ones are classified once two machines at different
		// addresses (p and q, and punched peers) have answered.
		for name, want := range map[string]string{"p": "none", "e": "none", "q": "none",
			"a": "endpoint-independent", "b": "endpoint-independent", "c": "symmetric", "d": "symmetric"} {
			if got := statuses[name].NAT; got != want {
				t.Errorf("%s classifies its NAT as %q, want %q", name, got, want)
			}
		}
		// Hole punching a↔b: how long from b's join to a direct path.
		for _, p := range statuses["a"].Peers {
			if p.Machine == "b" {
				t.Logf("FIGURE a↔b (two endpoint-independent NATs): first search found the direct path in %v (nat layer's clock); b joined %v before the paths settled",
					p.FirstDirect, time.Since(joinedB).Round(100*time.Millisecond))
				// Target 5 s; asserted with room for a loaded 2-core machine.
				if p.FirstDirect <= 0 || p.FirstDirect > 15*time.Second {
					t.Errorf("a → b: first direct path after %v, want within 15 s of a learning of b", p.FirstDirect)
				}
			}
			if p.Machine == "c" {
				if p.FirstRelay > 15*time.Second {
					t.Errorf("a → c: settled on a relay after %v, want within 15 s (target 10 s)", p.FirstRelay)
				}
				t.Logf("FIGURE a↔c (EIM vs symmetric NAT): relayed via %s (first search settled on a relay after %v; 0 = the peer's relayed packets came first)", p.Via, p.FirstRelay)
			}
		}
	}) {
		return
	}

	if !t.Run("every machine reaches every other", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var fails []string
		ms = f.machines(ctx, t, 0)
		for _, m := range ms {
			addr[m.Name] = netip.MustParseAddr(m.Address)
		}
		for i := range f.hosts {
			if natZoo[i].userspace {
				continue // the host's kernel has no route into a netstack mesh; others ping it
			}
			wg.Go(func() {
				for _, m := range ms {
					if m.Name == natZoo[i].name {
						continue
					}
					if err := pingRetry(ctx, f.hosts[i], m.Address, 20*time.Second); err != nil {
						mu.Lock()
						fails = append(fails, fmt.Sprintf("%s → %s: %v", natZoo[i].name, m.Name, err))
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		if len(fails) > 0 {
			t.Fatalf("pairs that do not reach each other:\n%s", strings.Join(fails, "\n"))
		}
	}) {
		return
	}

	if !t.Run("uncloud mesh and machine ls show relayed pairs, NAT types and modes", func(t *testing.T) {
		// uncloud mesh, as an operator reads it.
		if out, err := f.uncloud(ctx, t, idx["c"], "mesh"); err != nil || !strings.Contains(out, "relayed") || !strings.Contains(out, "NAT symmetric") {
			t.Errorf("uncloud mesh on c: %v\n%s", err, out)
		} else {
			t.Logf("uncloud mesh on c:\n%s", out)
		}
		// machine ls shows the endpoint in use: the relay's for a relayed pair.
		for _, m := range f.machines(ctx, t, idx["c"]) {
			relayed := strings.HasPrefix(m.Endpoint, "relay ")
			if m.Name == "d" && !relayed || m.Name == "p" && relayed {
				t.Errorf("machine ls on c: %s endpoint %q", m.Name, m.Endpoint)
			}
		}
		for _, m := range ms {
			if want := map[bool]string{true: "netstack", false: "kernel"}[natZoo[idx[m.Name]].userspace]; m.Mode != want {
				t.Errorf("%s runs in %q mode, want %q", m.Name, m.Mode, want)
			}
		}
	}) {
		return
	}

	if !t.Run("relayed pairs carry 10 MB intact, like a direct pair", func(t *testing.T) {
		// c → d ends in netstack mode; a direct pair for comparison.
		direct := meshTransfer(t, f, idx["a"], idx["b"], addr, 10<<20, 51)
		relayCD := meshTransfer(t, f, idx["c"], idx["d"], addr, 10<<20, 52)
		relayAC := meshTransfer(t, f, idx["a"], idx["c"], addr, 10<<20, 53)
		t.Logf("FIGURE throughput, 10 MB: a→b direct %.0f Mbit/s; c→d relayed %.0f Mbit/s; a→c relayed %.0f Mbit/s (ratio relayed/direct %.2f)",
			direct, relayCD, relayAC, relayCD/direct)
		var relayedBytes uint64
		for _, r := range []string{"p", "q"} {
			rst, err := f.mesh(ctx, t, idx[r])
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s relayed %d datagrams, %d bytes; dropped %d, rate-limited %d, no route %d", r,
				rst.Relay.Forwarded, rst.Relay.ForwardedBytes, rst.Relay.Dropped, rst.Relay.RateLimited, rst.Relay.NoRoute)
			relayedBytes += rst.Relay.ForwardedBytes
		}
		if relayedBytes < 20<<20 {
			t.Errorf("p and q relayed %d bytes, want at least the two 10 MB transfers", relayedBytes)
		}
	}) {
		return
	}

	if !t.Run("a↔b cut at a's router: relayed, then direct again once the cut is removed", func(t *testing.T) {
		if err := f.hosts[a].Router.BlockPeer(ctx, f.hosts[b].PublicAddr); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		waitPath(ctx, t, f, a, "b", "relayed", 30*time.Second)
		waitPath(ctx, t, f, b, "a", "relayed", 30*time.Second)
		toRelay = time.Since(cut)
		if err := pingRetry(ctx, f.hosts[a], addr["b"].String(), 20*time.Second); err != nil {
			t.Fatalf("a → b while the direct path is cut: %v", err)
		}
		if err := f.hosts[a].Router.UnblockPeer(ctx); err != nil {
			t.Fatal(err)
		}
		healed := time.Now()
		waitPath(ctx, t, f, a, "b", "direct", 30*time.Second)
		waitPath(ctx, t, f, b, "a", "direct", 30*time.Second)
		toDirect = time.Since(healed)
		if err := pingRetry(ctx, f.hosts[a], addr["b"].String(), 20*time.Second); err != nil {
			t.Fatalf("a → b after the cut is removed: %v", err)
		}
		t.Logf("FIGURE a↔b direct path cut: relayed on both sides after %v; cut removed: direct again after %v",
			toRelay.Round(100*time.Millisecond), toDirect.Round(100*time.Millisecond))
	}) {
		return
	}

	// a's router reboots: mappings flushed, a new public port. Every pair
	// with a must recover (a↔b hole punched again).
	if !t.Run("a's NAT router reboots: a reaches everyone again, a↔b direct again", func(t *testing.T) {
		if err := f.hosts[a].Router.Reboot(ctx, 40001); err != nil {
			t.Fatal(err)
		}
		rebooted := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var fails []string
		for _, peer := range []string{"p", "b", "c", "e", "q"} {
			wg.Go(func() {
				if err := pingRetry(ctx, f.hosts[a], addr[peer].String(), 60*time.Second); err != nil {
					mu.Lock()
					fails = append(fails, fmt.Sprintf("a → %s: %v", peer, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(fails) > 0 {
			t.Fatalf("after a's router rebooted:\n%s", strings.Join(fails, "\n"))
		}
		reachedAll := time.Since(rebooted)
		waitPath(ctx, t, f, a, "b", "direct", 30*time.Second)
		waitPath(ctx, t, f, b, "a", "direct", 30*time.Second)
		abDirect = time.Since(rebooted)
		t.Logf("FIGURE a's NAT router rebooted (new public port 40001): a reached p, b, c, e and q again %v later; a↔b direct again (both sides) %v later (target 10 s)",
			reachedAll.Round(100*time.Millisecond), abDirect.Round(100*time.Millisecond))
		if abDirect > 10*time.Second {
			t.Logf("NOTE a↔b took longer than the 10 s target after the reboot (loaded machine: %v)", abDirect)
		}
	}) {
		return
	}

	if !t.Run("the relay c↔d uses dies: both move to the other relay", func(t *testing.T) {
		c, d := idx["c"], idx["d"]
		cst, err := f.mesh(ctx, t, c)
		if err != nil {
			t.Fatal(err)
		}
		via := ""
		for _, p := range cst.Peers {
			if p.Machine == "d" {
				via = p.Via
			}
		}
		other := map[string]string{"p": "q", "q": "p"}[via]
		if other == "" {
			t.Fatalf("c → d relayed via %q, expected p or q", via)
		}
		if err := f.procs[idx[via]].Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		waitVia(ctx, t, f, c, "d", other, 30*time.Second)
		waitVia(ctx, t, f, d, "c", other, 30*time.Second)
		if err := pingRetry(ctx, f.hosts[c], addr["d"].String(), 30*time.Second); err != nil {
			t.Fatalf("c → d after relay %s died: %v", via, err)
		}
		t.Logf("FIGURE relay %s killed: c↔d relayed via %s and carrying pings %v later", via, other, time.Since(killed).Round(100*time.Millisecond))
	}) {
		return
	}

	// Computed comparison, not measured: KubeSpan tries one candidate per
	// 15 s and declares a peer down after 275 s, and has neither hole
	// punching nor a relay.
	t.Logf("FIGURE (computed, not measured) KubeSpan: a↔b behind two NATs never connects (no simultaneous probing); "+
		"c↔d never connects (no relay); recovering a cut path takes up to 275 s before rotation even starts, "+
		"then 15 s per candidate (a has %d candidates at b: up to %d s); measured here: %v to relay, %v back to direct, %v after a NAT reboot",
		len(candidatesOf(statuses["a"], "b")), 275+15*len(candidatesOf(statuses["a"], "b")),
		toRelay.Round(100*time.Millisecond), toDirect.Round(100*time.Millisecond), abDirect.Round(100*time.Millisecond))
}

func candidatesOf(st api.MeshStatus, peer string) []string {
	for _, p := range st.Peers {
		if p.Machine == peer {
			return p.Candidates
		}
	}
	return nil
}

// waitVia waits until host i reaches peer relayed via relay.
func waitVia(ctx context.Context, t *testing.T, f *formed, i int, peer, relay string, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("%s → %s relayed via %s", f.hosts[i].Name, peer, relay), within, func() error {
		p, err := peerPath(ctx, t, f, i, peer)
		if err != nil {
			return err
		}
		if p.Path != "relayed" || p.Via != relay {
			return fmt.Errorf("path %s (%s via %q)", p.Path, p.Endpoint, p.Via)
		}
		return nil
	})
}

// waitPath waits until host i's path to peer is want.
func waitPath(ctx context.Context, t *testing.T, f *formed, i int, peer, want string, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("%s → %s %s", f.hosts[i].Name, peer, want), within, func() error {
		p, err := peerPath(ctx, t, f, i, peer)
		if err != nil {
			return err
		}
		if p.Path != want {
			return fmt.Errorf("path %s (%s via %q)", p.Path, p.Endpoint, p.Via)
		}
		return nil
	})
}

// peerPath is what host i's mesh status says of peer.
func peerPath(ctx context.Context, t *testing.T, f *formed, i int, peer string) (api.MeshPeer, error) {
	st, err := f.mesh(ctx, t, i)
	if err != nil {
		return api.MeshPeer{}, err
	}
	for _, p := range st.Peers {
		if p.Machine == peer {
			return p, nil
		}
	}
	return api.MeshPeer{}, fmt.Errorf("%s not among the peers", peer)
}

// pingRetry pings addr from h until one echo comes back or within has
// passed.
func pingRetry(ctx context.Context, h *lab.Host, addr string, within time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	_, err := testkit.Poll(pctx, "an echo reply from "+addr, func() error { return pingOnce(ctx, h, addr) })
	return err
}

// meshTransfer sends size bytes from host i to host j over their mesh
// addresses and checks size and sha256 on both ends; it returns Mbit/s.
func meshTransfer(t *testing.T, f *formed, i, j int, addr map[string]netip.Addr, size int64, seed uint64) float64 {
	t.Helper()
	from, to := natZoo[i].name, natZoo[j].name
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	listen := netip.AddrPortFrom(addr[to], transferPort)
	sinkAddr := listen
	if natZoo[j].userspace {
		sinkAddr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), transferPort) // where the agent forwards
	}
	sink, err := f.hosts[j].StartSink(ctx, fmt.Sprintf("sink%d", seed), sinkAddr, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := f.hosts[i].Send(ctx, listen, size, seed, lab.DialOptions{Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatalf("%s → %s: %v", from, to, err)
	}
	got, err := sink.Result(ctx)
	if err != nil {
		t.Fatalf("%s → %s: %v", from, to, err)
	}
	if sent.Bytes != size || got.Bytes != size || got.SHA256 != sent.SHA256 {
		t.Fatalf("%s → %s: sent %d bytes sha256 %s, received %d bytes sha256 %s", from, to, sent.Bytes, sent.SHA256, got.Bytes, got.SHA256)
	}
	if !natZoo[j].userspace && !strings.HasPrefix(got.Peer, addr[from].String()+":") {
		t.Errorf("%s → %s: receiver saw peer %s, want %s", from, to, got.Peer, addr[from])
	}
	t.Logf("%s → %s: %d MB intact, %.0f Mbit/s", from, to, size>>20, got.Mbps())
	return got.Mbps()
}
