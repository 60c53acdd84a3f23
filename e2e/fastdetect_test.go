package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// Issue 18's timed figures: how long a cut-off machine goes unnoticed,
// how long a heal takes, and how long a join takes. The agents' local
// APIs are read straight from their sockets (no process start per poll),
// every host at once, so the figures are the agents' and not the poller's.

// apiOf connects to host i's local API socket (closed at the test's end).
func (f *formed) apiOf(t *testing.T, i int) *api.Client {
	t.Helper()
	c, err := api.NewClient(filepath.Join(f.hosts[i].Dir, "run", "uncloud.sock"), api.SSHOptions{})
	if err != nil {
		t.Fatalf("local API of %s: %v", f.hosts[i].Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// viewsOf polls every client's machine list at once (every 50 ms) until
// cond holds for each, and returns when each one got there, measured from
// start. A host that never gets there within timeout has a zero entry.
func viewsOf(ctx context.Context, clients []*api.Client, start time.Time, timeout time.Duration, cond func(i int, ms []api.MachineInfo) bool) []time.Duration {
	took := make([]time.Duration, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				var ms []api.MachineInfo
				err := c.Get(cctx, api.PathMachines, &ms)
				cancel()
				if err == nil && cond(i, ms) {
					took[i] = time.Since(start)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return took
}

// stateOf is what a machine says of each machine (by name).
func stateOf(ms []api.MachineInfo) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		out[m.Name] = m.State
	}
	return out
}

func labelsOf(ms []api.MachineInfo) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m.Labels {
			out[m.Name+"/"+k] = v
		}
	}
	return out
}

func slowest(ds []time.Duration) (time.Duration, bool) {
	var worst time.Duration
	for _, d := range ds {
		if d == 0 {
			return 0, false
		}
		worst = max(worst, d)
	}
	return worst, true
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// TestFailureDetection: four machines (m2 and m4 behind home-router NATs),
// m4 is cut off on the wire. Every machine on both sides must see the
// other side unreachable within 10 s; each side changes a label meanwhile;
// after the heal the state must be identical everywhere within 5 s and
// every machine alive everywhere within 10 s. The figures are logged
// ("FIGURE …") for bench/nat.
func TestFailureDetection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := fourHosts(ctx, t, "debug", "UNCLOUD_DETECT_LOGS")
	l := f.lab
	f.waitAllAlive(ctx, t, 60*time.Second)
	clients := make([]*api.Client, len(f.hosts))
	for i := range f.hosts {
		clients[i] = f.apiOf(t, i)
	}
	cut := 3 // m4
	names := []string{"m1", "m2", "m3", "m4"}

	split, err := l.Partition(ctx, []*lab.Host{f.hosts[cut]}, []*lab.Host{f.hosts[0], f.hosts[1], f.hosts[2]})
	if err != nil {
		t.Fatal(err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			split.Heal(context.Background())
		}
	})
	cutAt := time.Now()
	// Nobody may call the other side alive: m4 sees m1–m3 down, and
	// m1–m3 see m4 down.
	detect := viewsOf(ctx, clients, cutAt, 60*time.Second, func(i int, ms []api.MachineInfo) bool {
		st := stateOf(ms)
		for j, n := range names {
			if j == i || (i == cut) == (j == cut) {
				continue
			}
			if st[n] == "alive" || st[n] == "suspect" {
				return false
			}
		}
		return true
	})
	worst, all := slowest(detect)
	t.Logf("FIGURE cut-off machine seen unreachable: slowest %v, per machine m1..m4 %v", worst.Round(10*time.Millisecond), roundAll(detect))
	if !all {
		t.Errorf("a machine still calls the other side alive 60 s after the cut (0 = never): %v", roundAll(detect))
	} else if worst > 10*time.Second {
		t.Errorf("detection took %v, want ≤ 10 s", worst)
	}

	// The resolver follows the same view: neither side answers the
	// other's machine name any more.
	// (The resolver rebuilds its answers on the view's change signal:
	// allowed a second to do so.)
	resolves := func(i int, name string, want bool) (bool, error) {
		deadline := time.Now().Add(2 * time.Second)
		for {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			a, err := clients[i].DNSQuery(cctx, name+".machine.internal", "A")
			cancel()
			got := len(a.Answer) > 0
			if (err == nil && got == want) || time.Now().After(deadline) {
				return got, err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, q := range []struct {
		i    int
		name string
	}{{0, "m4"}, {cut, "m1"}} {
		if ok, err := resolves(q.i, q.name, false); err != nil || ok {
			t.Errorf("m%d still resolves %s.machine.internal once it is unreachable (err %v)", q.i+1, q.name, err)
		}
	}

	// Each side writes while split: m1 labels itself, m4 labels itself.
	for _, w := range []struct {
		i    int
		name string
	}{{0, "m1"}, {cut, "m4"}} {
		up := api.MachineUpdate{SetLabels: map[string]string{"split": w.name}}
		if err := clients[w.i].Do(ctx, "PATCH", api.PathMachines+"/"+w.name, up, nil); err != nil {
			t.Fatalf("label %s during the split: %v", w.name, err)
		}
	}
	// Let the split last long enough for gossip to have declared the
	// other side dead (its suspicion runs out), which is the harder heal.
	time.Sleep(time.Until(cutAt.Add(20 * time.Second)))

	if err := split.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	healed = true
	healAt := time.Now()
	var converge, alive []time.Duration
	var wg sync.WaitGroup
	want := map[string]string{"m1/split": "m1", "m4/split": "m4"}
	wg.Go(func() {
		converge = viewsOf(ctx, clients, healAt, 60*time.Second, func(i int, ms []api.MachineInfo) bool {
			return maps.Equal(labelsOf(ms), want)
		})
	})
	wg.Go(func() {
		alive = viewsOf(ctx, clients, healAt, 60*time.Second, func(i int, ms []api.MachineInfo) bool {
			return len(ms) == len(names) && allAliveOrSelf(ms)
		})
	})
	wg.Wait()
	cw, cok := slowest(converge)
	aw, aok := slowest(alive)
	t.Logf("FIGURE after the heal: state identical everywhere in %v (m1..m4 %v); everyone alive everywhere in %v (m1..m4 %v)",
		cw.Round(10*time.Millisecond), roundAll(converge), aw.Round(10*time.Millisecond), roundAll(alive))
	var errs []error
	if !cok || cw > 5*time.Second {
		errs = append(errs, fmt.Errorf("state identical after %v (%v), want ≤ 5 s", cw, roundAll(converge)))
	}
	if !aok || aw > 10*time.Second {
		errs = append(errs, fmt.Errorf("everyone alive after %v (%v), want ≤ 10 s", aw, roundAll(alive)))
	}
	if ok, err := resolves(0, "m4", true); err != nil || !ok {
		errs = append(errs, fmt.Errorf("m1 does not resolve m4.machine.internal once everyone is alive (err %v)", err))
	}
	if err := errors.Join(errs...); err != nil {
		f.explainMembership(ctx, t)
		t.Error(err)
	}
}

// keepLogs writes every agent's log to the directory named by env (if
// set) when the test ends, for reading timestamps after a run.
func keepLogs(t *testing.T, f *formed, env string) {
	dir := os.Getenv(env)
	if dir == "" {
		return
	}
	t.Cleanup(func() {
		os.MkdirAll(dir, 0o755)
		for i, p := range f.procs {
			if p != nil {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("m%d.log", i+1)), []byte(p.Log()), 0o644)
			}
		}
	})
}

func allAliveOrSelf(ms []api.MachineInfo) bool {
	for _, m := range ms {
		if m.State != "alive" && m.State != "self" {
			return false
		}
	}
	return true
}

// TestJoinOrder: five joins in quick succession, each started as soon as
// the one before is a member, half of the machines behind home-router
// NATs, with tokens from varying public members (a NAT lets no joiner
// in). Each join must take < 1 s from the command to being listed alive
// by every machine (asserted with a margin for a loaded machine; the
// figures are logged). A machine behind a NAT used to take 5 s: its first
// WireGuard initiation to each member reached members that did not know
// it yet, the members could not initiate through its NAT, and WireGuard
// waits 5 s before initiating again.
func TestJoinOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := natHosts(ctx, t, true, lab.NATNone, lab.NATEndpointIndependent, lab.NATNone, lab.NATEndpointIndependent, lab.NATNone, lab.NATEndpointIndependent)
	l := f.lab
	hosts := f.hosts
	keepLogs(t, f, "UNCLOUD_JOIN_LOGS")
	f.startAgent(ctx, t, 0, "init", "--name", "m1", "--foreground")
	clients := []*api.Client{f.apiOf(t, 0)}
	var took []time.Duration
	for i := 1; i < len(hosts); i++ {
		issuer := []int{0, 0, 2, 0, 4}[i-1] // m1, m1, m3, m1, m5: public, and not always the first
		var tok api.TokenInfo
		if err := clients[issuer].Do(ctx, "POST", api.PathTokens, api.TokenRequest{TTL: 10 * time.Minute, Uses: 1}, &tok); err != nil {
			t.Fatalf("token on m%d: %v", issuer+1, err)
		}
		name := fmt.Sprintf("m%d", i+1)
		start := time.Now()
		p, err := hosts[i].Start("uncloud", l.Uncloud, "--log-level", "debug", "join", "--name", name, "--foreground", tok.Token)
		if err != nil {
			t.Fatal(err)
		}
		f.procs[i] = p
		c, err := api.NewClient(filepath.Join(hosts[i].Dir, "run", "uncloud.sock"), api.SSHOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
		// Member: every machine, the new one included, lists all i+1
		// alive, with a WireGuard handshake to each.
		views := viewsOf(ctx, clients, start, 30*time.Second, func(_ int, ms []api.MachineInfo) bool {
			if len(ms) != i+1 || !allAliveOrSelf(ms) {
				return false
			}
			for _, m := range ms {
				if m.State != "self" && m.LastHandshake.IsZero() {
					return false
				}
			}
			return true
		})
		d, ok := slowest(views)
		if !ok {
			f.explainMembership(ctx, t)
			t.Fatalf("join of %s (token from m%d) not complete after 30 s: %v\n%s", name, issuer+1, roundAll(views), p.Log())
		}
		took = append(took, d)
		t.Logf("join %d: %s with a token from m%d: a member everywhere %v after the command (per machine %v)", i, name, issuer+1, d.Round(10*time.Millisecond), roundAll(views))
		logs := map[string]string{}
		for j := 0; j <= i; j++ {
			if f.procs[j] != nil {
				logs[fmt.Sprintf("m%d", j+1)] = f.procs[j].Log()
			}
		}
		t.Logf("join %d phases from the command (%s): %s", i, start.UTC().Format("15:04:05.000"), joinTimeline(start, name, logs))
	}
	worst, _ := slowest(took)
	t.Logf("FIGURE five joins in quick succession: %v (slowest %v)", roundAll(took), worst.Round(10*time.Millisecond))
	// The target is 1 s, asserted with a margin for a loaded 2-core
	// machine: a joiner behind a NAT seen from a member behind a NAT has
	// its paths both ways about 40 ms after its agent is up and the
	// restarted handshake at most 150 ms after the member learnt of it
	// (0.26–0.48 s from the command measured at load 2–3; 0.83–1.39 s
	// with the NAT layer waiting for its 250 ms tick and 0.4 s before
	// relaying, 1.7–2.2 s before the call-me-maybe and handshake
	// fixes). With both cores saturated the slowest join took 0.53–0.92 s,
	// most of it the processes' start, so 1 s is not asserted. The
	// phases are logged per join. Above 3 s is a regression: the
	// joiner's record waiting for the next head set (before the store's
	// fetch retry) or WireGuard's 5 s REKEY_TIMEOUT (a restarted
	// handshake that killed the one in flight).
	for i, d := range took {
		if d > 3*time.Second {
			t.Errorf("join %d took %v, want < 1 s (asserted < 3 s under load)", i+1, d)
		}
	}
}

// TestNoFalseDownsUnderLoad: four machines (two behind NATs), nothing cut,
// both cores kept busy by spinning goroutines for UNCLOUD_FLAP_WINDOW (the
// issue asks for 10 minutes; unset, the test is skipped: it is a
// measurement, too long for CI). Every machine's list is polled twice a
// second: any peer leaving "alive" is a false down. The agents' own log
// lines ("machine unreachable from here") are counted too.
func TestNoFalseDownsUnderLoad(t *testing.T) {
	window, err := time.ParseDuration(os.Getenv("UNCLOUD_FLAP_WINDOW"))
	if err != nil || window <= 0 {
		t.Skip("set UNCLOUD_FLAP_WINDOW (e.g. 10m) to measure false downs under load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), window+3*time.Minute)
	defer cancel()
	f := fourHosts(ctx, t, "info", "")
	f.waitAllAlive(ctx, t, 60*time.Second)
	clients := make([]*api.Client, len(f.hosts))
	for i := range f.hosts {
		clients[i] = f.apiOf(t, i)
	}
	logsBefore := make([]int, len(f.procs))
	for i, p := range f.procs {
		logsBefore[i] = strings.Count(p.Log(), "machine unreachable from here")
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	var spinners sync.WaitGroup
	for range 2 * runtime.NumCPU() {
		spinners.Go(func() {
			x := 0
			for loadCtx.Err() == nil {
				for range 1_000_000 {
					x++
				}
			}
			_ = x
		})
	}
	var flaps []string
	var polls int
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		for i, c := range clients {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var ms []api.MachineInfo
			err := c.Get(cctx, api.PathMachines, &ms)
			cancel()
			if err != nil {
				continue // the API itself starved: not a verdict on peers
			}
			polls++
			for _, m := range ms {
				if m.State != "alive" && m.State != "self" {
					flaps = append(flaps, fmt.Sprintf("%s: m%d sees %s %s", time.Now().Format("15:04:05.0"), i+1, m.Name, m.State))
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	stopLoad()
	spinners.Wait()
	logged := 0
	for i, p := range f.procs {
		logged += strings.Count(p.Log(), "machine unreachable from here") - logsBefore[i]
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("FIGURE false downs under load over %v: %d seen in %d polls of 4 machines, %d logged by the agents (load average at the end %s)",
		window, len(flaps), polls, logged, strings.Join(strings.Fields(string(load))[:3], " "))
	if len(flaps) > 0 || logged > 0 {
		t.Errorf("false downs under load: %d polled, %d logged: %v", len(flaps), logged, flaps[:min(len(flaps), 20)])
	}
}
