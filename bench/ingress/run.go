package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

type row struct {
	name string
	url  func(p ports) string
}

type ports struct {
	backend                     int
	caddyHTTP, caddyHTTPS       int
	nginxHTTP, nginxHTTPS       int
	haproxyHTTP, haproxyHTTPS   int
	uncloudHTTP, uncloudHTTPS   int
	baselineHTTP, baselineHTTPS int
}

func httpURL(port func(p ports) int) func(p ports) string {
	return func(p ports) string { return fmt.Sprintf("http://localhost:%d/", port(p)) }
}

func httpsURL(port func(p ports) int) func(p ports) string {
	return func(p ports) string { return fmt.Sprintf("https://localhost:%d/", port(p)) }
}

var rows = []row{
	{"backend", func(p ports) string { return fmt.Sprintf("http://127.0.0.1:%d/", p.backend) }},
	{"nginx-http", httpURL(func(p ports) int { return p.nginxHTTP })},
	{"haproxy-http", httpURL(func(p ports) int { return p.haproxyHTTP })},
	{"caddy-http", httpURL(func(p ports) int { return p.caddyHTTP })},
	{"uncloud-http", httpURL(func(p ports) int { return p.uncloudHTTP })},
	{"baseline-http", httpURL(func(p ports) int { return p.baselineHTTP })},
	{"nginx-https", httpsURL(func(p ports) int { return p.nginxHTTPS })},
	{"haproxy-https", httpsURL(func(p ports) int { return p.haproxyHTTPS })},
	{"caddy-https", httpsURL(func(p ports) int { return p.caddyHTTPS })},
	{"uncloud-https", httpsURL(func(p ports) int { return p.uncloudHTTPS })},
	{"baseline-https", httpsURL(func(p ports) int { return p.baselineHTTPS })},
}

// peers are compared with uncloud in the summary, in this order.
var peers = []string{"nginx", "haproxy", "caddy"}

func rowNames() []string {
	var n []string
	for _, r := range rows {
		n = append(n, r.name)
	}
	return n
}

type result struct {
	rps float64
	p99 time.Duration
	// p50, p90 and max show where the tail starts (the per-round lines
	// on stderr): a stall shows as a max far beyond p99.
	p50, p90, max time.Duration
	err           string
}

func run(ctx context.Context, o options) error {
	if err := need("wrk", "caddy", "nginx", "haproxy"); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bench-ingress-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "keeping", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	certFile, keyFile := filepath.Join(tmp, "cert.pem"), filepath.Join(tmp, "key.pem")
	if err := writeSelfSigned(certFile, keyFile); err != nil {
		return err
	}
	var p ports
	for _, x := range []*int{&p.backend, &p.caddyHTTP, &p.caddyHTTPS, &p.nginxHTTP, &p.nginxHTTPS,
		&p.haproxyHTTP, &p.haproxyHTTPS, &p.uncloudHTTP, &p.uncloudHTTPS, &p.baselineHTTP, &p.baselineHTTPS} {
		if *x, err = freePort(); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, c := range procs {
			c.Process.Signal(os.Interrupt)
		}
		for _, c := range procs {
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
			}
		}
	}()
	start := func(c *exec.Cmd, logName string) error {
		f, err := os.Create(filepath.Join(tmp, logName))
		if err != nil {
			return err
		}
		c.Stderr = f
		if c.Stdout == nil {
			c.Stdout = f
		}
		if err := c.Start(); err != nil {
			return fmt.Errorf("start %s: %w", c.Path, err)
		}
		procs = append(procs, c)
		return nil
	}

	if err := start(exec.Command(self, "-role", "backend", "-port", strconv.Itoa(p.backend)), "backend.log"); err != nil {
		return err
	}

	startIngress := func(bin, name string, httpPort, httpsPort int, profile string) error {
		ing := exec.Command(bin, "-role", "ingress")
		setup, _ := json.Marshal(ingressSetup{Dir: filepath.Join(tmp, name+"-state"), BackendPort: p.backend,
			HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort), HTTPSAddr: fmt.Sprintf("127.0.0.1:%d", httpsPort),
			CertFile: certFile, KeyFile: keyFile, Profile: profile, AccessLog: o.accessLog})
		ing.Stdin = strings.NewReader(string(setup))
		out, err := ing.StdoutPipe()
		if err != nil {
			return err
		}
		if err := start(ing, name+".log"); err != nil {
			return err
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(out)
			ok := sc.Scan() && sc.Text() == "ready"
			ready <- ok
			for sc.Scan() {
			}
		}()
		select {
		case ok := <-ready:
			if !ok {
				return fmt.Errorf("%s ingress did not start; see %s", name, filepath.Join(tmp, name+".log"))
			}
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s ingress not ready after 30 s", name)
		}
		return nil
	}
	if err := startIngress(self, "uncloud", p.uncloudHTTP, p.uncloudHTTPS, o.profile); err != nil {
		return err
	}
	if o.baseline != "" {
		if err := startIngress(o.baseline, "baseline", p.baselineHTTP, p.baselineHTTPS, ""); err != nil {
			return err
		}
	}

	cmds, err := peerCommands(p, tmp, certFile, keyFile)
	if err != nil {
		return err
	}
	for _, name := range peers {
		if err := start(cmds[name], name+".log"); err != nil {
			return err
		}
	}
	for _, port := range []int{p.backend, p.caddyHTTP, p.caddyHTTPS, p.nginxHTTP, p.nginxHTTPS, p.haproxyHTTP, p.haproxyHTTPS} {
		if err := waitPort(port, 30*time.Second); err != nil {
			return fmt.Errorf("%w (logs in %s; -keep keeps them)", err, tmp)
		}
	}
	versions := peerVersions()

	selected := rows
	if o.baseline == "" {
		selected = slices.DeleteFunc(slices.Clone(rows), func(r row) bool { return strings.HasPrefix(r.name, "baseline-") })
	}
	if o.only != "" {
		selected = nil
		for _, r := range rows {
			if slices.Contains(strings.Split(o.only, ","), r.name) {
				selected = append(selected, r)
			}
		}
	}
	results := map[string][]result{}
	load, _ := os.ReadFile("/proc/loadavg")
	for round := 0; round < o.repeat; round++ {
		for _, r := range selected {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			url := r.url(p)
			wrk(ctx, o, url, 2*time.Second) // warm up connections and caches
			res := wrk(ctx, o, url, o.duration)
			fmt.Fprintf(os.Stderr, "round %d %-14s %9.0f req/s  p99 %v  (p50 %v p90 %v max %v) %s\n", round+1, r.name, res.rps, res.p99,
				res.p50, res.p90, res.max, res.err)
			results[r.name] = append(results[r.name], res)
		}
	}
	loadAfter, _ := os.ReadFile("/proc/loadavg")
	report(o, selected, results, versions, strings.Fields(string(load)), strings.Fields(string(loadAfter)))
	return nil
}

var (
	rpsRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p50RE = regexp.MustCompile(`\s50%\s+([0-9.]+)(us|ms|s)`)
	p90RE = regexp.MustCompile(`\s90%\s+([0-9.]+)(us|ms|s)`)
	p99RE = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
	// wrk's "Latency avg stdev max +/- stdev" line.
	maxRE = regexp.MustCompile(`Latency\s+[0-9.]+(?:us|ms|s)\s+[0-9.]+(?:us|ms|s)\s+([0-9.]+)(us|ms|s)`)
	errRE = regexp.MustCompile(`(Non-2xx or 3xx responses: \d+|Socket errors: [^\n]+)`)
)

func wrk(ctx context.Context, o options, url string, d time.Duration) result {
	cmd := exec.CommandContext(ctx, "wrk", "-t"+strconv.Itoa(o.threads), "-c"+strconv.Itoa(o.connections),
		"-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{err: fmt.Sprintf("wrk: %v: %s", err, out)}
	}
	return parseWrk(out)
}

// parseWrk reads wrk --latency's report.
func parseWrk(out []byte) result {
	var res result
	if m := rpsRE.FindSubmatch(out); m != nil {
		res.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	res.p50, res.p90 = wrkDuration(p50RE, out), wrkDuration(p90RE, out)
	res.p99, res.max = wrkDuration(p99RE, out), wrkDuration(maxRE, out)
	for _, m := range errRE.FindAll(out, -1) {
		res.err += string(m) + "; "
	}
	return res
}

// wrkDuration is the first duration re matches in wrk's output (the
// number and its unit as submatches), 0 if none.
func wrkDuration(re *regexp.Regexp, out []byte) time.Duration {
	m := re.FindSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[2])]
	return time.Duration(v * float64(unit)).Round(time.Microsecond)
}

func median(rs []result) result {
	if len(rs) == 0 {
		return result{}
	}
	byRPS := slices.Clone(rs)
	slices.SortFunc(byRPS, func(a, b result) int { return int(a.rps - b.rps) })
	byP99 := slices.Clone(rs)
	slices.SortFunc(byP99, func(a, b result) int { return int(a.p99 - b.p99) })
	m := byRPS[len(rs)/2]
	m.p99 = byP99[len(rs)/2].p99
	return m
}

// spread is the lowest and highest req/s and p99 over the rounds.
func spread(rs []result) (lo, hi result) {
	for i, r := range rs {
		if i == 0 || r.rps < lo.rps {
			lo.rps = r.rps
		}
		if i == 0 || r.p99 < lo.p99 {
			lo.p99 = r.p99
		}
		hi.rps = max(hi.rps, r.rps)
		hi.p99 = max(hi.p99, r.p99)
	}
	return lo, hi
}

func report(o options, selected []row, results map[string][]result, versions string, load, loadAfter []string) {
	fmt.Printf("\n### reverse proxy: wrk -t%d -c%d -d%v, %d round(s), medians\n\n", o.threads, o.connections, o.duration, o.repeat)
	fmt.Printf("%s; load average before %s, after %s (1/5/15 min)\n\n", versions, strings.Join(load[:3], " "), strings.Join(loadAfter[:3], " "))
	fmt.Println("| row | req/s | req/s min–max | p99 | p99 min–max | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---|")
	med := map[string]result{}
	for _, r := range selected {
		m := median(results[r.name])
		med[r.name] = m
		lo, hi := spread(results[r.name])
		fmt.Printf("| %s | %.0f | %.0f–%.0f | %v | %v–%v | %s |\n", r.name, m.rps, lo.rps, hi.rps,
			m.p99.Round(10*time.Microsecond), lo.p99.Round(10*time.Microsecond), hi.p99.Round(10*time.Microsecond), m.err)
	}
	var parts []string
	for _, proto := range []string{"http", "https"} {
		u := med["uncloud-"+proto]
		for _, peer := range append(slices.Clone(peers), "baseline") {
			c := med[peer+"-"+proto]
			if u.rps > 0 && c.rps > 0 && c.p99 > 0 {
				parts = append(parts, fmt.Sprintf("%s: uncloud/%s req/s %.2fx, p99 %.2fx", strings.ToUpper(proto), peer,
					u.rps/c.rps, float64(u.p99)/float64(c.p99)))
			}
		}
	}
	if b := med["backend"]; b.rps > 0 && med["uncloud-http"].rps > 0 {
		parts = append(parts, fmt.Sprintf("uncloud-http/backend %.2fx", med["uncloud-http"].rps/b.rps))
	}
	fmt.Printf("\nsummary: %s (target: req/s >= 1.0x nginx and haproxy, p99 <= theirs)\n", strings.Join(parts, "; "))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitPort(port int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on port %d after %v", port, d)
}

func writeSelfSigned(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}
