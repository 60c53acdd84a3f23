// Command formation measures how fast machines join and leave an uncloud
// network, and what an idle agent costs, with real agents in network
// namespaces (the e2e lab: one namespace per machine on a bridge that
// plays the internet, real WireGuard over real UDP):
//
//	sudo go run ./bench/formation [-sizes 5,20] [-idle 30s] [-uncloud BIN]
//
// For each size N it forms N−1 machines with init and tokens, then times
// the N-th join: until the new machine has a WireGuard handshake with
// every other (`uncloud join` prints "part of the network" at that point),
// and until every other machine lists it alive. Then `machine rm` on the
// first machine, timed until no machine lists it or keeps it as a peer.
// Last, every agent's RSS and CPU time over an idle window.
//
// The agents' local APIs are read straight from their sockets (each lab
// host's /run/uncloud lives in its directory), so polling costs no process
// start. It prints a table and a one-line summary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

type row struct {
	figure, value, target string
	ok                    bool
}

func main() {
	sizes := flag.String("sizes", "5,20", "sizes of the network a new machine joins, comma-separated")
	idle := flag.Duration("idle", 30*time.Second, "idle window for the RSS and CPU figures")
	userspace := flag.Bool("userspace", false, "run every agent in netstack mode")
	logs := flag.String("logs", "", "write each agent's log to this directory at the end of each size")
	profile := flag.String("profile", "", "save the first agent's CPU profile over the idle window, and its heap before and after it (pprof -diff_base: what it allocates while idle), in this directory")
	prebuilt := flag.String("uncloud", "", "use this uncloud binary instead of building ./cmd/uncloud (e.g. an earlier commit's, for a before/after in one session)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "formation: needs root (network namespaces): sudo go run ./bench/formation")
		os.Exit(2)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "uncloud-formation-bin-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	bin := *prebuilt
	if bin == "" {
		fmt.Fprintln(os.Stderr, "building uncloud…")
		if bin, err = lab.BuildUncloud(ctx, dir); err != nil {
			fail(err)
		}
	}
	var rows []row
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 200 {
			fail(fmt.Errorf("size %q: want a number of machines from 1 to 200", s))
		}
		r, err := measure(ctx, bin, n+1, *idle, *userspace, *logs, *profile)
		if err != nil {
			fail(fmt.Errorf("%d machines: %w", n, err))
		}
		rows = append(rows, r...)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\ttarget\tmet")
	met, targets := 0, 0
	for _, r := range rows {
		mark := "no"
		switch {
		case r.target == "":
			mark = "-" // a figure without a target
		case r.ok:
			mark, met, targets = "yes", met+1, targets+1
		default:
			targets++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.figure, r.value, r.target, mark)
	}
	tw.Flush()
	fmt.Printf("summary: %d of %d formation targets met (sizes %s, idle window %v, mode %s)\n",
		met, targets, *sizes, *idle, map[bool]string{false: "kernel TUN", true: "netstack"}[*userspace])
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "formation:", err)
	os.Exit(1)
}

// network is one formed lab network.
type network struct {
	lab     *lab.Lab
	hosts   []*lab.Host
	procs   []*lab.Process
	clients []*api.Client
	mode    []string
}

func measure(ctx context.Context, bin string, n int, idle time.Duration, userspace bool, logs, profile string) (_ []row, err error) {
	l, err := lab.New(ctx, lab.Options{Uncloud: bin})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	hosts, err := l.AddHosts(ctx, n)
	if err != nil {
		return nil, err
	}
	net := &network{lab: l, hosts: hosts, procs: make([]*lab.Process, n), clients: make([]*api.Client, n)}
	if userspace {
		net.mode = []string{"--userspace"}
	}
	defer func() {
		if logs == "" {
			return
		}
		os.MkdirAll(logs, 0o755)
		for i, p := range net.procs {
			if p != nil {
				os.WriteFile(filepath.Join(logs, fmt.Sprintf("n%d-%s.log", n, name(i))), []byte(p.Log()), 0o644)
			}
		}
	}()
	defer func() {
		for _, c := range net.clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	fmt.Fprintf(os.Stderr, "%d machines: forming the first %d…\n", n, n-1)
	if err := net.start(ctx, 0, "init", "--name", "m1"); err != nil {
		return nil, err
	}
	for i := 1; i < n-1; i++ {
		tok, err := net.token(ctx)
		if err != nil {
			return nil, err
		}
		if err := net.start(ctx, i, "join", "--name", name(i), tok); err != nil {
			return nil, err
		}
	}
	if _, err := net.waitAll(ctx, 2*time.Minute, "all alive", func(i int, ms []api.MachineInfo) bool {
		return i == n-1 || (len(ms) == n-1 && allAlive(ms))
	}); err != nil {
		return nil, err
	}

	// The timed join.
	tok, err := net.token(ctx)
	if err != nil {
		return nil, err
	}
	newName := name(n - 1)
	start := time.Now()
	if err := net.start(ctx, n-1, "join", "--name", newName, tok); err != nil {
		return nil, err
	}
	var reach, seen time.Duration
	var wg sync.WaitGroup
	var reachErr, seenErr error
	wg.Go(func() {
		reachErr = poll(ctx, time.Minute, func() (bool, error) {
			var st api.Status
			if err := net.get(ctx, n-1, "/v1/status", &st); err != nil {
				return false, nil // the agent is still starting
			}
			if len(st.Peers) < n-1 {
				return false, nil
			}
			for _, p := range st.Peers {
				if p.LastHandshake.IsZero() {
					return false, nil
				}
			}
			return true, nil
		})
		reach = time.Since(start)
	})
	wg.Go(func() {
		seen, seenErr = net.waitAll(ctx, time.Minute, newName+" alive everywhere", func(i int, ms []api.MachineInfo) bool {
			if i == n-1 {
				return true
			}
			for _, m := range ms {
				if m.Name == newName {
					return m.State == "alive"
				}
			}
			return false
		})
		seen = time.Since(start)
	})
	wg.Wait()
	if err := errors.Join(reachErr, seenErr); err != nil {
		return nil, err
	}

	// Idle cost of all n agents, n−1 peers each: let the join settle,
	// then count CPU time over the window.
	time.Sleep(5 * time.Second)
	cpu0, kids0 := make([]float64, n), make([]float64, n)
	for i := range n {
		if cpu0[i], kids0[i], err = cpuSeconds(net.procs[i].Pid()); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "%d machines: idle window %v…\n", n, idle)
	var profiled sync.WaitGroup
	if profile != "" {
		// The heap profile's allocation counts run from the agent's start:
		// this one, subtracted from the one after the window (pprof
		// -diff_base), leaves what the agent allocates while idle.
		if err := net.saveProfile(ctx, "/debug/pprof/heap", filepath.Join(profile, fmt.Sprintf("heap-start-%d.pb.gz", n))); err != nil {
			fmt.Fprintf(os.Stderr, "heap profile: %v\n", err)
		}
		profiled.Go(func() {
			path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(idle.Seconds())-1))
			if err := net.saveProfile(ctx, path, filepath.Join(profile, fmt.Sprintf("cpu-%d.pb.gz", n))); err != nil {
				fmt.Fprintf(os.Stderr, "cpu profile: %v\n", err)
			}
		})
	}
	time.Sleep(idle)
	profiled.Wait()
	if profile != "" {
		if err := net.saveProfile(ctx, "/debug/pprof/heap", filepath.Join(profile, fmt.Sprintf("heap-%d.pb.gz", n))); err != nil {
			fmt.Fprintf(os.Stderr, "heap profile: %v\n", err)
		}
		// The text form ends with the runtime's MemStats, and smaps says
		// which mappings the resident pages belong to: together they tell
		// heap from stacks, badger's mmaps and the binary's own pages.
		if err := net.saveProfile(ctx, "/debug/pprof/heap?debug=1", filepath.Join(profile, fmt.Sprintf("heap-%d.txt", n))); err != nil {
			fmt.Fprintf(os.Stderr, "heap profile: %v\n", err)
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", net.procs[0].Pid())); err == nil {
			os.WriteFile(filepath.Join(profile, fmt.Sprintf("smaps-%d.txt", n)), b, 0o644)
		}
	}
	var cpus, rss, anon []float64
	var split []string
	for i := range n {
		c, kids, err := cpuSeconds(net.procs[i].Pid())
		if err != nil {
			return nil, err
		}
		self, children := 100*(c-cpu0[i])/idle.Seconds(), 100*(kids-kids0[i])/idle.Seconds()
		cpus = append(cpus, self+children)
		split = append(split, fmt.Sprintf("%s %.2f+%.2f", name(i), self, children))
		r, err := net.procs[i].RSS()
		if err != nil {
			return nil, err
		}
		rss = append(rss, float64(r)/(1<<20))
		a, err := net.procs[i].AnonRSS()
		if err != nil {
			return nil, err
		}
		anon = append(anon, float64(a)/(1<<20))
	}
	// Which agent spends what, itself and its children (iptables-restore,
	// nft): the median and max alone do not say who or where.
	fmt.Fprintf(os.Stderr, "%d machines: idle CPU %% of a core, agent+children: %s\n", n, strings.Join(split, ", "))
	// The timed removal, from the first machine: every other machine is
	// watched from the moment the command starts; the command itself also
	// rotates the gossip key, which it reports separately.
	start = time.Now()
	var gone, rmCall time.Duration
	var goneErr, rmErr error
	wg.Go(func() {
		_, goneErr = net.waitAll(ctx, time.Minute, newName+" gone everywhere", func(i int, ms []api.MachineInfo) bool {
			if i == n-1 {
				return true
			}
			for _, m := range ms {
				if m.Name == newName {
					return false
				}
			}
			var st api.Status
			if err := net.get(ctx, i, "/v1/status", &st); err != nil {
				return false
			}
			for _, p := range st.Peers {
				if p.Machine == newName {
					return false
				}
			}
			return true
		})
		gone = time.Since(start)
	})
	wg.Go(func() {
		var res api.RemoveResult
		if err := net.clients[0].Do(ctx, "DELETE", "/v1/machines/"+newName, nil, &res); err != nil {
			rmErr = fmt.Errorf("machine rm %s: %w", newName, err)
		}
		rmCall = time.Since(start)
	})
	wg.Wait()
	if err := errors.Join(goneErr, rmErr); err != nil {
		return nil, err
	}
	net.procs[n-1].Stop(5 * time.Second)

	// Which agents are the largest: the first machine also issues the
	// tokens and serves the profile, the last one joined last.
	maxRSS, maxCPU := name(argmax(rss)), name(argmax(cpus))
	slices.Sort(cpus)
	slices.Sort(rss)
	slices.Sort(anon)
	peers := n - 1
	return []row{
		{fmt.Sprintf("join a network of %d: until a handshake with all %d", n-1, n-1), ms(reach), "< 3 s", reach < 3*time.Second},
		{fmt.Sprintf("join a network of %d: until alive on all %d", n-1, n-1), ms(seen), "< 2 s", seen < 2*time.Second},
		{fmt.Sprintf("machine rm in a network of %d: until gone from all %d others", n, n-2), ms(gone), "< 2 s", gone < 2*time.Second},
		{fmt.Sprintf("machine rm in a network of %d: the command, with the gossip key pushed to all", n), ms(rmCall), "", true},
		{fmt.Sprintf("idle RSS per agent, %d peers: median / max", peers),
			fmt.Sprintf("%.1f / %.1f MB (%s)", median(rss), rss[len(rss)-1], maxRSS), "< 64 MB", rss[len(rss)-1] < 64},
		// For the reader: RSS counts the binary's own pages (file-backed,
		// about 27 MB), which the lab's agents share and one machine's
		// agent does not; the anonymous part is the agent's own memory.
		{fmt.Sprintf("idle anonymous RSS per agent, %d peers: median / max", peers),
			fmt.Sprintf("%.1f / %.1f MB", median(anon), anon[len(anon)-1]), "", true},
		{fmt.Sprintf("idle CPU per agent, %d peers: median / max", peers),
			fmt.Sprintf("%.2f%% / %.2f%% of a core (%s)", median(cpus), cpus[len(cpus)-1], maxCPU), "< 1%", cpus[len(cpus)-1] < 1},
	}, nil
}

func name(i int) string { return fmt.Sprintf("m%d", i+1) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func median(xs []float64) float64 { return xs[len(xs)/2] }

func argmax(xs []float64) int {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return best
}

func allAlive(ms []api.MachineInfo) bool {
	for _, m := range ms {
		if m.State != "alive" && m.State != "self" {
			return false
		}
	}
	return true
}

// start runs `uncloud <args> --foreground` on host i and connects to its
// socket once it is up.
func (w *network) start(ctx context.Context, i int, args ...string) error {
	args = append(append(append([]string{"--log-level", logLevel()}, args...), "--foreground"), w.mode...)
	p, err := w.hosts[i].Start("uncloud", w.lab.Uncloud, args...)
	if err != nil {
		return err
	}
	w.procs[i] = p
	c, err := api.NewClient(filepath.Join(w.hosts[i].Dir, "run", "uncloud.sock"), api.SSHOptions{})
	if err != nil {
		return err
	}
	w.clients[i] = c
	return poll(ctx, 30*time.Second, func() (bool, error) {
		if !p.Alive() {
			return false, fmt.Errorf("uncloud %s on %s exited: %s", args[2], w.hosts[i].Name, p.Log())
		}
		var st api.Status
		return w.get(ctx, i, "/v1/status", &st) == nil, nil
	})
}

func (w *network) token(ctx context.Context) (string, error) {
	var t api.TokenInfo
	if err := w.clients[0].Do(ctx, "POST", "/v1/tokens", api.TokenRequest{TTL: 10 * time.Minute, Uses: 1}, &t); err != nil {
		return "", fmt.Errorf("token on m1: %w", err)
	}
	return t.Token, nil
}

// saveProfile writes one of the first agent's pprof answers to file.
func (w *network) saveProfile(ctx context.Context, path, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", w.clients[0].BaseURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := w.clients[0].HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s from %s: %w", path, w.hosts[0].Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s from %s: %s %w", path, w.hosts[0].Name, resp.Status, err)
	}
	return os.WriteFile(file, body, 0o644)
}

func (w *network) get(ctx context.Context, i int, path string, out any) error {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return w.clients[i].Get(cctx, path, out)
}

// waitAll polls every host's machine list at once until cond holds on
// all, and returns when the last one got there.
func (w *network) waitAll(ctx context.Context, timeout time.Duration, what string, cond func(i int, ms []api.MachineInfo) bool) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, len(w.hosts))
	var wg sync.WaitGroup
	for i := range w.hosts {
		if w.clients[i] == nil {
			continue
		}
		wg.Go(func() {
			errs[i] = poll(ctx, timeout, func() (bool, error) {
				var ms []api.MachineInfo
				if err := w.get(ctx, i, "/v1/machines", &ms); err != nil {
					return false, nil
				}
				return cond(i, ms), nil
			})
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%s on %s: %w", what, w.hosts[i].Name, errs[i])
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// poll calls f every 20 ms until it reports done, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cpuSeconds is a process's user+system CPU time, from /proc, and that
// of its children it waited for: the agent re-applies its iptables rules
// through iptables-restore, and that is its cost too.
func cpuSeconds(pid int) (self, children float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 15 {
		return 0, 0, fmt.Errorf("cpu time of pid %d: short /proc stat %q", pid, s)
	}
	var ticks [4]float64
	for i, f := range fields[11:15] { // utime, stime, cutime, cstime
		n, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
		}
		ticks[i] = n
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return (ticks[0] + ticks[1]) / ticksPerSecond, (ticks[2] + ticks[3]) / ticksPerSecond, nil
}

// logLevel is the agents' log level: warn, or UNCLOUD_BENCH_LOG_LEVEL
// (e.g. debug, with -logs, to see why a join was slow).
func logLevel() string {
	if l := os.Getenv("UNCLOUD_BENCH_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}
