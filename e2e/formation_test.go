package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// formed is a network built with init and joins, agents in the foreground
// as lab processes (so the lab stops them), each host with its own data
// dir and socket at the default paths.
type formed struct {
	lab   *lab.Lab
	hosts []*lab.Host
	procs []*lab.Process
	// logLevel is what startAgent's agents log at; "" is debug.
	logLevel string
}

func (f *formed) uncloud(ctx context.Context, t *testing.T, i int, args ...string) (string, error) {
	t.Helper()
	return f.hosts[i].Run(ctx, f.lab.Uncloud, args...)
}

func (f *formed) machines(ctx context.Context, t *testing.T, i int) []api.MachineInfo {
	t.Helper()
	out, err := f.uncloud(ctx, t, i, "machine", "ls", "-o", "json")
	if err != nil {
		t.Fatalf("machine ls on %s: %v", f.hosts[i].Name, err)
	}
	var ms []api.MachineInfo
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("machine ls on %s: %v\n%s", f.hosts[i].Name, err, out)
	}
	return ms
}

// startAgent runs `uncloud <args>` in the foreground on host i and waits
// for the daemon's "machine up" line.
func (f *formed) startAgent(ctx context.Context, t *testing.T, i int, args ...string) {
	t.Helper()
	p, err := f.hosts[i].Start("uncloud", f.lab.Uncloud, append([]string{"--log-level", cmp.Or(f.logLevel, "debug")}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.procs[i] = p
	upCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := p.WaitLog(upCtx, 0, "machine up"); err != nil {
		t.Fatalf("agent on %s: %v\n%s", f.hosts[i].Name, err, p.Log())
	}
}

func (f *formed) token(ctx context.Context, t *testing.T, i int, args ...string) string {
	t.Helper()
	out, err := f.uncloud(ctx, t, i, append([]string{"token"}, args...)...)
	if err != nil {
		t.Fatalf("token on %s: %v", f.hosts[i].Name, err)
	}
	return strings.TrimSpace(out)
}

// form makes n hosts: h1 inits, the others join with tokens from h1;
// hosts listed in userspace run in netstack mode.
func form(ctx context.Context, t *testing.T, n int, userspace map[int]bool) *formed {
	t.Helper()
	l := lab.Start(t)
	hosts, err := l.AddHosts(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	f := &formed{lab: l, hosts: hosts, procs: make([]*lab.Process, n)}
	mode := func(i int) []string {
		if userspace[i] {
			return []string{"--userspace"}
		}
		return nil
	}
	f.startAgent(ctx, t, 0, append([]string{"init", "--name", "m1", "--foreground"}, mode(0)...)...)
	for i := 1; i < n; i++ {
		tok := f.token(ctx, t, 0)
		f.startAgent(ctx, t, i, append([]string{"join", "--name", fmt.Sprintf("m%d", i+1), "--foreground", tok}, mode(i)...)...)
	}
	return f
}

// waitAllAlive waits until every host lists all n machines as alive (or
// itself) with a WireGuard handshake to each, and returns how long it took.
func (f *formed) waitAllAlive(ctx context.Context, t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	took, err := testkit.Poll(pctx, fmt.Sprintf("all %d machines alive everywhere with a handshake", len(f.hosts)), func() error {
		for i := range f.hosts {
			ms := f.machines(ctx, t, i)
			if len(ms) != len(f.hosts) {
				return fmt.Errorf("%s lists %d machines", f.hosts[i].Name, len(ms))
			}
			for _, m := range ms {
				if m.State == "self" {
					continue
				}
				if m.State != "alive" || m.LastHandshake.IsZero() {
					return fmt.Errorf("%s sees %s as %s (handshake %v)", f.hosts[i].Name, m.Name, m.State, m.LastHandshake)
				}
			}
		}
		return nil
	})
	if err != nil {
		f.explainMembership(ctx, t)
		t.Fatal(err)
	}
	return took
}

// explainMembership logs what each host holds of the membership: the
// machine records in its state and the records its verifier ignored, so
// a machine missing from a list says whether its record never arrived or
// arrived and was refused.
func (f *formed) explainMembership(ctx context.Context, t *testing.T) {
	t.Helper()
	for i, h := range f.hosts {
		recs, err := f.uncloud(ctx, t, i, "state", "ls", "/machines/")
		t.Logf("%s: state ls /machines/ (%v):\n%s", h.Name, err, recs)
		st, err := f.uncloud(ctx, t, i, "status", "-o", "json")
		t.Logf("%s: status (%v):\n%s", h.Name, err, st)
	}
}

// TestFormation: init, four joins (two of them in netstack mode), every
// machine sees all five and every kernel machine pings every other; an
// agent killed with SIGKILL comes back with the same identity and subnet.
func TestFormation(t *testing.T) {
	ctx := context.Background()
	f := form(ctx, t, 5, map[int]bool{3: true, 4: true})
	took := f.waitAllAlive(ctx, t, 30*time.Second)
	t.Logf("all five machines alive everywhere %v after the last join", took)

	var ms []api.MachineInfo // as m1 lists them after the formation

	if !t.Run("five machines: distinct subnets, the right modes, kernel machines ping every other", func(t *testing.T) {
		ms = f.machines(ctx, t, 0)
		subnets := map[string]bool{}
		for _, m := range ms {
			if subnets[m.Subnet] {
				t.Fatalf("subnet %s given twice: %+v", m.Subnet, ms)
			}
			subnets[m.Subnet] = true
			want := "kernel"
			if m.Name == "m4" || m.Name == "m5" {
				want = "netstack"
			}
			if m.Mode != want {
				t.Errorf("%s runs in %q mode, want %q", m.Name, m.Mode, want)
			}
		}
		// Traffic between every pair that has a kernel side to ping from
		// (a netstack address answers ICMP inside the agent).
		for i := 0; i < 3; i++ {
			for _, m := range ms {
				if m.Name == fmt.Sprintf("m%d", i+1) {
					continue
				}
				if err := pingOnce(ctx, f.hosts[i], m.Address); err != nil {
					t.Errorf("%s cannot ping %s: %v", f.hosts[i].Name, m.Name, err)
				}
			}
		}
	}) {
		return
	}

	if !t.Run("m3 killed -9 and restarted: same id, same subnet", func(t *testing.T) {
		before := ms[2]
		if err := f.procs[2].Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		f.procs[2].Wait(ctx)
		f.startAgent(ctx, t, 2, "agent")
		f.waitAllAlive(ctx, t, 30*time.Second)
		for _, m := range f.machines(ctx, t, 2) {
			if m.State == "self" && (m.ID != before.ID || m.Subnet != before.Subnet) {
				t.Fatalf("after kill -9 m3 came back as %+v, was %+v", m, before)
			}
		}
	}) {
		return
	}

	if !t.Run("m5 stopped for good: the others see it down", func(t *testing.T) {
		f.procs[4].Signal(syscall.SIGKILL)
		took := testkit.Eventually(t, "m5 seen down by all others after SIGKILL", 30*time.Second, func() error {
			for i := 0; i < 4; i++ {
				for _, m := range f.machines(ctx, t, i) {
					if m.Name == "m5" && m.State != "down" {
						return fmt.Errorf("%s sees m5 as %s", f.hosts[i].Name, m.State)
					}
				}
			}
			return nil
		})
		t.Logf("m5 seen down by all others %v after SIGKILL", took.Round(100*time.Millisecond))
	}) {
		return
	}

	// machine rm while m3 is down: m5's keys are revoked everywhere and
	// the gossip key rotates; m3 fetches the new key when it comes back.
	// Brought back with its old keys, m5 is no one's peer and no one
	// lists it.
	if !t.Run("m5 removed while m3 is down: revoked everywhere, m3 fetches the rotated gossip key", func(t *testing.T) {
		oldKey := f.status(ctx, t, 0).GossipKey
		f.procs[2].Signal(syscall.SIGKILL)
		f.procs[2].Wait(ctx)
		out, err := f.uncloud(ctx, t, 1, "machine", "rm", "m5")
		if err != nil {
			t.Fatalf("machine rm m5: %v\n%s", err, out)
		}
		if !strings.Contains(out, "2 of 3 other machines have the new key; m3 will fetch it") {
			t.Errorf("machine rm m5 with m3 down says:\n%s", out)
		}
		f.startAgent(ctx, t, 2, "agent")
		if _, err := f.uncloud(ctx, t, 1, "machine", "rm", "m2"); err == nil {
			t.Fatal("a machine removed itself")
		}
		f.startAgent(ctx, t, 4, "agent")
		// m3 missed the removal and the new key: it must fetch the key,
		// then the revocation, and drop m5 on its own. One 20 s budget
		// for the four machines, each checked in turn.
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		for i := 0; i < 4; i++ {
			if _, err := testkit.Poll(pctx, f.hosts[i].Name+" forgetting m5", func() error {
				if stale := f.staleM5(ctx, t, i); stale != "" {
					return errors.New(stale)
				}
				return nil
			}); err != nil {
				t.Errorf("20 s after the removal: %v", err)
			}
		}
		t.Logf("m5 gone from every list and peer set %v after m3 and m5 restarted", time.Since(start).Round(100*time.Millisecond))
		start = time.Now()
		newKey := f.waitSameGossipKey(ctx, t, 4, 60*time.Second)
		t.Logf("all four machines on the rotated gossip key %v after m3's restart", time.Since(start).Round(100*time.Millisecond))
		if newKey == oldKey || f.status(ctx, t, 4).GossipKey != oldKey {
			t.Errorf("gossip key %s before removal, %s after, removed m5 has %s", oldKey, newKey, f.status(ctx, t, 4).GossipKey)
		}
	}) {
		return
	}

	// Gossip and the state still work on the new key: a rename and a role
	// made on other machines than the target reach everyone.
	if !t.Run("on the new key, a rename and a role made elsewhere reach everyone", func(t *testing.T) {
		if out, err := f.uncloud(ctx, t, 0, "machine", "rename", "m4", "m2"); err == nil {
			t.Errorf("renamed m4 to the taken name m2:\n%s", out)
		}
		if out, err := f.uncloud(ctx, t, 0, "machine", "rename", "m4", "Bad_Name"); err == nil || !strings.Contains(err.Error(), "DNS label") {
			t.Errorf("rename to an invalid name: %v\n%s", err, out)
		}
		if out, err := f.uncloud(ctx, t, 0, "machine", "role", "add", "m2", "database"); err == nil || !strings.Contains(err.Error(), "unknown role") {
			t.Errorf("unknown role: %v\n%s", err, out)
		}
		if out, err := f.uncloud(ctx, t, 0, "machine", "rename", "m4", "db-1"); err != nil {
			t.Fatalf("rename m4 (netstack) from m1: %v\n%s", err, out)
		}
		if out, err := f.uncloud(ctx, t, 2, "machine", "role", "add", "m2", "ingress"); err != nil {
			t.Fatalf("role add on m2 from m3: %v\n%s", err, out)
		}
		// One 10 s budget for the four machines, each checked in turn.
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for i := 0; i < 4; i++ {
			if _, err := testkit.Poll(pctx, f.hosts[i].Name+" seeing the rename and the role", func() error {
				names := map[string]string{}
				for _, m := range f.machines(ctx, t, i) {
					names[m.Name] = strings.Join(m.Roles, ",")
				}
				if _, renamed := names["db-1"]; !renamed || names["m2"] != "ingress" {
					return fmt.Errorf("names and roles %v", names)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("rename and role seen everywhere %v after the commands", time.Since(start).Round(10*time.Millisecond))
	}) {
		return
	}

	t.Run("the rename is the machine's own: it survives a restart", func(t *testing.T) {
		f.procs[3].Signal(syscall.SIGTERM)
		f.procs[3].Wait(ctx)
		f.startAgent(ctx, t, 3, "agent", "--userspace")
		if st := f.status(ctx, t, 3); st.Name != "db-1" {
			t.Errorf("after a restart the renamed machine is %q", st.Name)
		}
	})
}

func (f *formed) status(ctx context.Context, t *testing.T, i int) api.Status {
	t.Helper()
	out, err := f.uncloud(ctx, t, i, "status", "-o", "json")
	if err != nil {
		t.Fatalf("status on %s: %v\n%s", f.hosts[i].Name, err, out)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status on %s: %v\n%s", f.hosts[i].Name, err, out)
	}
	return st
}

// waitSameGossipKey waits until the first n hosts use one gossip key and
// list each other as alive, and returns that key's fingerprint.
func (f *formed) waitSameGossipKey(ctx context.Context, t *testing.T, n int, timeout time.Duration) string {
	t.Helper()
	key := ""
	testkit.Eventually(t, fmt.Sprintf("the first %d machines on one gossip key, all alive", n), timeout, func() error {
		keys := map[string]bool{}
		alive := true
		for i := 0; i < n; i++ {
			keys[f.status(ctx, t, i).GossipKey] = true
			for _, m := range f.machines(ctx, t, i) {
				alive = alive && (m.State == "alive" || m.State == "self")
			}
		}
		if len(keys) != 1 || !alive {
			return fmt.Errorf("%d gossip keys (all alive: %v)", len(keys), alive)
		}
		for k := range keys {
			key = k
		}
		return nil
	})
	return key
}

// TestJoinRefusals: each bad join gets a clear error, and nothing changes
// on either side.
func TestJoinRefusals(t *testing.T) {
	ctx := context.Background()
	f := form(ctx, t, 3, nil)
	f.waitAllAlive(ctx, t, 30*time.Second)
	stranger := f.lab.MustHost(t, "s1", lab.HostOptions{})

	used := f.token(ctx, t, 0)
	f.hosts = append(f.hosts, stranger)
	f.procs = append(f.procs, nil)
	revoked := f.token(ctx, t, 0)
	revokedTok, err := membership.ParseToken(revoked, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.uncloud(ctx, t, 0, "token", "rm", revokedTok.ID); err != nil {
		t.Fatal(err)
	}
	// A token whose network id was changed: the issuer is of another network.
	wrongNet := f.token(ctx, t, 0)
	wt, _ := membership.ParseToken(wrongNet, time.Now())
	wt.NetworkID = "0000000000000000"
	wrongNet, _ = wt.Encode()
	nameTaken := f.token(ctx, t, 0)

	tests := []struct {
		name, token, machine, want string
	}{
		{"malformed", "hello", "s1", "does not start with"},
		{"truncated", used[:len(used)-30], "s1", "damaged or cut short"},
		{"revoked", revoked, "s1", "was revoked"},
		{"other network", wrongNet, "s1", "is for network 0000000000000000"},
		{"name taken", nameTaken, "m2", "is taken"},
	}
	before := f.machines(ctx, t, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := stranger.Run(ctx, f.lab.Uncloud, "join", "--name", tt.machine, "--foreground", tt.token)
			if err == nil {
				t.Fatalf("join succeeded:\n%s", out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("join error = %v, want %q", err, tt.want)
			}
			if _, statErr := os.Stat(filepath.Join(stranger.Dir, "lib", "machine.json")); statErr == nil {
				t.Fatal("a refused join left a machine state behind")
			}
		})
	}
	// The refused name did not spend the token: the same token still
	// admits the stranger under a free name, once; a second use is refused.
	p, err := stranger.Start("uncloud", f.lab.Uncloud, "join", "--name", "s1", "--foreground", nameTaken)
	if err != nil {
		t.Fatal(err)
	}
	upCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := p.WaitLog(upCtx, 0, "machine up"); err != nil {
		t.Fatalf("join with a token whose earlier use was refused: %v\n%s", err, p.Log())
	}
	f.procs[3] = p
	other := f.lab.MustHost(t, "s2", lab.HostOptions{})
	if _, err := other.Run(ctx, f.lab.Uncloud, "join", "--name", "s2", "--foreground", nameTaken); err == nil || !strings.Contains(err.Error(), "has been used") {
		t.Fatalf("second use of a single-use token: %v", err)
	}
	after := f.machines(ctx, t, 0)
	if len(after) > len(before)+1 {
		t.Fatalf("machines went from %d to %d; only s1 should have joined", len(before), len(after))
	}
}

// TestUnprivilegedJoin: an agent without any privilege (uid 65534, no
// capabilities) joins in netstack mode, answers its API and is reached.
func TestUnprivilegedJoin(t *testing.T) {
	ctx := context.Background()
	f := form(ctx, t, 1, nil)
	h := f.lab.MustHost(t, "np", lab.HostOptions{})
	bin := forNobody(t, h, f.lab.Uncloud)
	tok := f.token(ctx, t, 0)
	p, err := h.Start("uncloud", "setpriv", asNobody(bin, "--log-level", "debug", "join", "--name", "nobody", "--foreground", tok)...)
	if err != nil {
		t.Fatal(err)
	}
	upCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := p.WaitLog(upCtx, 0, "machine up"); err != nil {
		t.Fatalf("unprivileged join: %v\n%s", err, p.Log())
	}
	if !strings.Contains(p.Log(), "using userspace netstack") {
		t.Fatalf("unprivileged agent did not say it fell back to netstack:\n%s", p.Log())
	}
	f.hosts = append(f.hosts, h)
	f.procs = append(f.procs, p)
	f.waitAllAlive(ctx, t, 30*time.Second)
	// Its API answers (as nobody, through its own socket) and it is
	// reachable on the mesh: ICMP to a netstack address is answered.
	out, err := h.Run(ctx, "setpriv", asNobody(bin, "status")...)
	if err != nil || !strings.Contains(out, "netstack mode") {
		t.Fatalf("status as nobody: %v\n%s", err, out)
	}
	if err := pingOnce(ctx, f.hosts[0], "10.210.2.1"); err != nil {
		t.Fatalf("m1 cannot ping the unprivileged machine: %v", err)
	}
}

// pingOnce sends ICMP echo from h to addr with the lab's own helper (no
// dependency on the host's ping) and fails unless one reply comes back.
func pingOnce(ctx context.Context, h *lab.Host, addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	res, err := h.Ping(ctx, a, 1, 3*time.Second)
	if err != nil {
		return err
	}
	if res.Received == 0 {
		return fmt.Errorf("no echo reply from %s (%s)", addr, res.Error)
	}
	return nil
}

// staleM5 says how host i still knows the removed m5, or "" if it does not.
func (f *formed) staleM5(ctx context.Context, t *testing.T, i int) string {
	t.Helper()
	for _, m := range f.machines(ctx, t, i) {
		if m.Name == "m5" {
			return fmt.Sprintf("still lists the removed m5: %+v", m)
		}
	}
	for _, p := range f.status(ctx, t, i).Peers {
		if strings.Contains(strings.Join(p.AllowedIPs, ","), "10.210.5.") {
			return fmt.Sprintf("still has the removed m5 as a peer: %+v", p)
		}
	}
	return ""
}
