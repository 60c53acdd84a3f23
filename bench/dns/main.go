// Command dns benchmarks uncloud's resolver against dnsmasq serving the
// same records: dnsperf queries both on loopback, at saturation and at a
// light fixed rate, and the program prints queries per second and p50/p99
// latency for each, then a one-line summary of ratios.
//
// The uncloud resolver runs in a child process (the real resolver.Server and
// resolver.Index, fed through the same Watcher interface the agent feeds
// from the replicated state, on one SO_REUSEPORT UDP socket per core, as
// the agent serves). dnsmasq runs as a child with the same names in an
// addn-hosts file, no upstream, no system service. Runs alternate between
// the two servers so drifting background load hits both alike.
//
// Run from the repository root (Debian: apt-get install dnsperf dnsmasq):
//
//	go run ./bench/dns [--duration 10s] [--rounds 1] [--records 1000] [--rate 1000]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/resolver"
)

type options struct {
	duration    time.Duration
	rounds      int
	records     int
	rate        int
	outstanding int
	profile     string
	keep        bool
	serve       bool // child mode: be the uncloud resolver
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each dnsperf run")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds over both servers; rows show the median round")
	flag.IntVar(&o.records, "records", 1000, "names served (container names, A records)")
	flag.IntVar(&o.rate, "rate", 1000, "queries per second of the light load (dnsperf -Q)")
	flag.IntVar(&o.outstanding, "outstanding", 100, "queries in flight at saturation (dnsperf -q)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the uncloud resolver process (all its runs) to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (hosts file, query file, dnsmasq log)")
	flag.BoolVar(&o.serve, "serve", false, "internal: run the uncloud resolver for the parent benchmark (prints its address, serves until stdin closes)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.serve {
		if err := serveChild(ctx, o); err != nil {
			fmt.Fprintf(os.Stderr, "bench/dns resolver: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "bench/dns: %v\n", err)
		os.Exit(1)
	}
}

// result is one dnsperf run.
type result struct {
	qps      float64
	p50, p99 time.Duration
	lost     int
	sent     int
}

func run(ctx context.Context, o options) error {
	for _, tool := range []string{"dnsperf", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian: apt-get install -y --no-install-recommends dnsperf dnsmasq): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "bench-dns-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(os.Stderr, "temp dir: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	in := records(o.records)
	hosts, queries := filepath.Join(dir, "hosts"), filepath.Join(dir, "queries")
	if err := writeFiles(in, hosts, queries); err != nil {
		return err
	}

	ucAddr, stopUC, err := startUncloud(ctx, o)
	if err != nil {
		return err
	}
	defer stopUC()
	dmAddr, stopDM, err := startDnsmasq(ctx, dir, hosts, o.records)
	if err != nil {
		return err
	}
	defer stopDM()

	// Both must answer every name before measuring.
	for _, a := range []string{ucAddr, dmAddr} {
		if r, err := dnsperf(ctx, a, queries, 2*time.Second, 0, 20); err != nil || r.lost > 0 {
			return fmt.Errorf("warm-up against %s: %+v %v", a, r, err)
		}
	}

	type row struct {
		server, load string
		runs         []result
	}
	rows := []*row{
		{server: "uncloud", load: "saturated"}, {server: "dnsmasq", load: "saturated"},
		{server: "uncloud", load: fmt.Sprintf("%d QPS", o.rate)}, {server: "dnsmasq", load: fmt.Sprintf("%d QPS", o.rate)},
	}
	load1, _ := os.ReadFile("/proc/loadavg")
	for round := range o.rounds {
		for i, r := range rows {
			addr := ucAddr
			if r.server == "dnsmasq" {
				addr = dmAddr
			}
			rate, q := 0, o.outstanding
			if i >= 2 {
				rate = o.rate
			}
			res, err := dnsperf(ctx, addr, queries, o.duration, rate, q)
			if err != nil {
				return fmt.Errorf("%s %s: %w", r.server, r.load, err)
			}
			fmt.Fprintf(os.Stderr, "round %d: %-8s %-10s %9.0f QPS  p50 %-9v p99 %-9v lost %d\n",
				round+1, r.server, r.load, res.qps, res.p50, res.p99, res.lost)
			r.runs = append(r.runs, res)
		}
	}
	load2, _ := os.ReadFile("/proc/loadavg")

	// Each figure is the median of its rounds, taken on its own.
	med := func(r *row) result {
		pick := func(get func(result) float64) float64 {
			v := make([]float64, 0, len(r.runs))
			for _, x := range r.runs {
				v = append(v, get(x))
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		return result{
			qps:  pick(func(x result) float64 { return x.qps }),
			p50:  time.Duration(pick(func(x result) float64 { return float64(x.p50) })),
			p99:  time.Duration(pick(func(x result) float64 { return float64(x.p99) })),
			lost: int(pick(func(x result) float64 { return float64(x.lost) })),
		}
	}
	fmt.Printf("DNS, %d A records, dnsperf on loopback, %v per run, %d round(s), %d CPUs, %s\n",
		o.records, o.duration, o.rounds, runtime.NumCPU(), runtime.Version())
	fmt.Printf("load average before: %s, after: %s\n\n", field3(load1), field3(load2))
	fmt.Println("| server | load | QPS | p50 | p99 | lost |")
	fmt.Println("|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		m := med(r)
		fmt.Printf("| %s | %s | %.0f | %s | %s | %d |\n", r.server, r.load, m.qps, ms(m.p50), ms(m.p99), m.lost)
	}
	us, ds, ul, dl := med(rows[0]), med(rows[1]), med(rows[2]), med(rows[3])
	fmt.Printf("\nuncloud/dnsmasq: QPS %.2fx saturated; p99 %.2fx saturated, %.2fx at %d QPS (target: QPS >= 1.00x, p99 <= 1.00x)\n",
		us.qps/ds.qps, ratio(us.p99, ds.p99), ratio(ul.p99, dl.p99), o.rate)
	return nil
}

func field3(b []byte) string {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// records are n running containers spread over machines of 250 each,
// named c<i>.m<k>.machine.internal.
func records(n int) []crdt.Record {
	var out []crdt.Record
	for k := 1; k <= (n+249)/250; k++ {
		out = append(out, &record.Machine{ID: fmt.Sprintf("id%d", k), Name: fmt.Sprintf("m%d", k), Subnet: meshaddr.Subnet(k).String()})
	}
	for i := range n {
		k := i/250 + 1
		out = append(out, &record.Container{MachineID: fmt.Sprintf("id%d", k), ID: fmt.Sprint(i), Name: fmt.Sprintf("c%d", i),
			Address: meshaddr.Subnet(k).ContainerAddr(uint8(i%250 + 2)).String(), State: "running"})
	}
	return out
}

// writeFiles writes the dnsmasq hosts file and the dnsperf query file
// (every container name, A).
func writeFiles(in []crdt.Record, hosts, queries string) error {
	var h, q strings.Builder
	machines := map[string]string{}
	for _, r := range in {
		if m, ok := r.(*record.Machine); ok {
			machines[m.ID] = m.Name
		}
	}
	for _, r := range in {
		if c, ok := r.(*record.Container); ok {
			name := c.Name + "." + machines[c.MachineID] + ".machine.internal"
			fmt.Fprintf(&h, "%s %s\n", c.Address, name)
			fmt.Fprintf(&q, "%s A\n", name)
		}
	}
	if err := os.WriteFile(hosts, []byte(h.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(queries, []byte(q.String()), 0o644)
}

// static is a resolver.Watcher with a fixed state: the snapshot, then
// nothing (the agent's watcher is the replicated store).
type static []crdt.Record

func (s static) Watch(ctx context.Context, prefix string) (<-chan crdt.Change, error) {
	ch := make(chan crdt.Change, len(s)+1)
	for _, r := range s {
		if strings.HasPrefix(r.Key(), prefix) {
			ch <- crdt.Change{Type: crdt.Snapshot, Key: r.Key(), Record: r}
		}
	}
	ch <- crdt.Change{Type: crdt.SnapshotDone}
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

// startUncloud runs the resolver in a child process (this program with
// -serve), as dnsmasq runs in its own: neither shares a runtime or a
// garbage collector with dnsperf's output parser here.
func startUncloud(ctx context.Context, o options) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	args := []string{"-serve", "-records", strconv.Itoa(o.records)}
	if o.profile != "" {
		args = append(args, "-cpuprofile", o.profile)
	}
	cmd := exec.CommandContext(ctx, self, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start the resolver child: %w", err)
	}
	stop := func() { stdin.Close(); cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("resolver child: %w", err)
	}
	return strings.TrimSpace(line), stop, nil
}

// serveChild is the resolver process: the real Index and Server, one
// SO_REUSEPORT socket per core, as the agent serves.
func serveChild(ctx context.Context, o options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	idx := resolver.NewIndex("id1", nil, log)
	go idx.Run(ctx, static(records(o.records)))
	select {
	case <-idx.Ready():
	case <-time.After(10 * time.Second):
		return fmt.Errorf("index not ready")
	}
	srv, err := resolver.NewServer(resolver.Config{Index: idx, ResolvConf: "/nonexistent", Logger: log})
	if err != nil {
		return err
	}
	pcs, err := resolver.ListenUDP(ctx, "127.0.0.1:0", resolver.UDPSockets())
	if err != nil {
		return err
	}
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	fmt.Println(pcs[0].LocalAddr().String())
	done := make(chan struct{}, len(pcs))
	for _, pc := range pcs {
		go func() { srv.ServePacket(ctx, pc); done <- struct{}{} }()
	}
	for range pcs {
		<-done
	}
	return nil
}

func startDnsmasq(ctx context.Context, dir, hosts string, n int) (string, func(), error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+hosts, "--listen-address=127.0.0.1", "--bind-interfaces", "--port="+strconv.Itoa(port),
		"--local-ttl=5", "--cache-size="+strconv.Itoa(max(n, 150)), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
	if os.Geteuid() == 0 {
		cmd.Args = append(cmd.Args, "--user=root")
	}
	logf, err := os.Create(filepath.Join(dir, "dnsmasq.log"))
	if err != nil {
		return "", nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start dnsmasq: %w", err)
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait(); logf.Close() }
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Wait until it answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("udp", addr)
		if err == nil {
			c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			// A query for "c0.m1.machine.internal A".
			q := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 'c', '0', 2, 'm', '1', 7, 'm', 'a', 'c', 'h', 'i', 'n', 'e', 8, 'i', 'n', 't', 'e', 'r', 'n', 'a', 'l', 0, 0, 1, 0, 1}
			c.Write(q)
			buf := make([]byte, 512)
			_, rerr := c.Read(buf)
			c.Close()
			if rerr == nil {
				return addr, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.log"))
			return "", nil, fmt.Errorf("dnsmasq does not answer on %s: %s", addr, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// dnsperf runs dnsperf -v against addr and computes QPS from its summary
// and latency percentiles from its per-query lines. rate 0 is saturation.
func dnsperf(ctx context.Context, addr, queries string, d time.Duration, rate, outstanding int) (result, error) {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-s", host, "-p", port, "-d", queries, "-l", strconv.Itoa(int(d.Seconds())), "-v",
		"-q", strconv.Itoa(outstanding), "-t", "2"}
	if rate > 0 {
		args = append(args, "-Q", strconv.Itoa(rate))
	}
	cmd := exec.CommandContext(ctx, "dnsperf", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	var r result
	lat := make([]time.Duration, 0, 1<<20)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "> "):
			f := strings.Fields(line)
			if s, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				lat = append(lat, time.Duration(s*1e9))
			}
		case strings.Contains(line, "Queries per second:"):
			r.qps, _ = strconv.ParseFloat(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), 64)
		case strings.Contains(line, "Queries lost:"):
			fmt.Sscanf(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), "%d", &r.lost)
		case strings.Contains(line, "Queries sent:"):
			fmt.Sscanf(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), "%d", &r.sent)
		}
	}
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("dnsperf %v: %w: %s", args, err, stderr.String())
	}
	if len(lat) == 0 {
		return r, fmt.Errorf("dnsperf %v: no answers", args)
	}
	slices.Sort(lat)
	r.p50 = lat[len(lat)/2]
	r.p99 = lat[len(lat)*99/100]
	return r, nil
}
