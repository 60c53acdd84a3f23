package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// helperHTTPGet fetches -url from inside a host and prints one JSON line:
// {"status":200,"body":"..."}.
func helperHTTPGet(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("httpget", flag.ContinueOnError)
	u := fs.String("url", "", "what to get")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}{resp.StatusCode, string(body)})
}

// httpGet runs helperHTTPGet on h.
func httpGet(ctx context.Context, h *lab.Host, u string) (int, string, error) {
	out, err := h.RunHelper(ctx, "httpget", "-url", u)
	if err != nil {
		return 0, "", err
	}
	var res struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return 0, "", fmt.Errorf("httpget %s: %w: %q", u, err, out)
	}
	return res.Status, res.Body, nil
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery asks the Prometheus at api (inside host h) an instant query.
func promQuery(ctx context.Context, h *lab.Host, api, query string) ([]promSample, error) {
	status, body, err := httpGet(ctx, h, api+"/api/v1/query?query="+url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	var res struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		return nil, fmt.Errorf("query %q: HTTP %d: %w: %.200s", query, status, err, body)
	}
	if res.Status != "success" {
		return nil, fmt.Errorf("query %q: %s: %s", query, res.Status, res.Error)
	}
	var out []promSample
	for _, r := range res.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %v: %w", query, r.Value, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// byMachine indexes samples by their target's machine label (and, with
// also, by another label: "m1/m2").
func byMachine(ss []promSample, also string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		k := s.Metric["machine"]
		if also != "" {
			k += "/" + s.Metric[also]
		}
		out[k] = s.Value
	}
	return out
}

// TestMetrics runs a real Prometheus (Debian's) in h1's namespace,
// scraping three agents every second: m1 on loopback, m2 on its mesh
// address (kernel mode), m3 on its mesh address inside its netstack
// (userspace mode). The series an operator would graph must be there.
// m1 then takes the ingress role and counts requests for hosts it does
// not publish. A non-loopback, non-mesh address is refused before
// anything changes, and a mesh listener is not reachable on the host's
// public address.
func TestMetrics(t *testing.T) {
	for _, tool := range []string{"prometheus", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/test installs it)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := lab.Start(t)
	hosts, err := l.AddHosts(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	f := &formed{lab: l, hosts: hosts, procs: make([]*lab.Process, len(hosts))}

	// Refused before anything is written.
	refused := filepath.Join(hosts[0].Dir, "refused-data")
	if _, err := hosts[0].Run(ctx, l.Uncloud, "init", "--data-dir", refused, "--foreground", "--metrics-addr", hosts[0].Addr.String()+":9101"); err == nil ||
		!strings.Contains(err.Error(), "--metrics-public") {
		t.Fatalf("init --metrics-addr on the public address: %v, want refused naming --metrics-public", err)
	}
	if _, err := os.Stat(refused); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused init left %s behind (%v)", refused, err)
	}

	const port = "9101"
	f.startAgent(ctx, t, 0, "init", "--name", "m1", "--foreground", "--metrics-addr", "127.0.0.1:"+port)
	f.startAgent(ctx, t, 1, "join", "--name", "m2", "--foreground", "--metrics-addr", "mesh:"+port, f.token(ctx, t, 0))
	f.startAgent(ctx, t, 2, "join", "--name", "m3", "--foreground", "--userspace", "--metrics-addr", "mesh:"+port, f.token(ctx, t, 0))
	f.waitAllAlive(ctx, t, 90*time.Second)
	addr := map[string]string{}
	for _, m := range f.machines(ctx, t, 0) {
		addr[m.Name] = m.Address
	}

	// Mesh only: m2's metrics are not on its public address.
	if _, _, err := httpGet(ctx, hosts[0], "http://"+hosts[1].Addr.String()+":"+port+"/metrics"); err == nil {
		t.Errorf("m2's metrics answer on its public address %v", hosts[1].Addr)
	}

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: uncloud
    static_configs:
      - targets: ['127.0.0.1:%[1]s']
        labels: {machine: m1}
      - targets: ['%[2]s:%[1]s']
        labels: {machine: m2}
      - targets: ['%[3]s:%[1]s']
        labels: {machine: m3}
`, port, addr["m2"], addr["m3"])
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// Our own process, config, storage and port: a system Prometheus, if
	// apt started one, is neither used nor disturbed.
	const api = "http://127.0.0.1:19090"
	prom, err := hosts[0].Start("prometheus", "prometheus", "--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address=127.0.0.1:19090",
		"--log.level=warn")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()

	// wait polls a query until check accepts its answer.
	wait := func(what, query string, check func([]promSample) error) []promSample {
		t.Helper()
		var last []promSample
		pctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		_, err := testkit.Poll(pctx, what, func() error {
			if !prom.Alive() {
				t.Fatalf("prometheus exited:\n%s", prom.Log())
			}
			ss, err := promQuery(ctx, hosts[0], api, query)
			if err != nil {
				return err
			}
			last = ss
			return check(ss)
		})
		if err != nil {
			t.Fatalf("%s: %v\nlast answer to %s: %v\nprometheus log:\n%s", what, err, query, last, prom.Log())
		}
		return last
	}
	machines := []string{"m1", "m2", "m3"}

	wait("all three targets up", `up == 1`, func(ss []promSample) error {
		if got := byMachine(ss, ""); len(got) != 3 {
			return fmt.Errorf("up: %v", got)
		}
		return nil
	})
	t.Logf("Prometheus scraped all three agents %v after it started", time.Since(started).Round(time.Millisecond))

	ages := wait("a handshake age for every pair", `uncloud_peer_handshake_age_seconds`, func(ss []promSample) error {
		got := byMachine(ss, "peer")
		for _, a := range machines {
			for _, b := range machines {
				if a == b {
					continue
				}
				age, ok := got[a+"/"+b]
				if !ok {
					return fmt.Errorf("no handshake age from %s to %s: %v", a, b, got)
				}
				if age < 0 || age > 300 {
					return fmt.Errorf("handshake age %s to %s: %v s", a, b, age)
				}
			}
		}
		if len(got) != 6 {
			return fmt.Errorf("%d series, want 6: %v", len(got), got)
		}
		return nil
	})
	t.Logf("handshake ages (machine/peer: s): %v", byMachine(ages, "peer"))
	wait("every pair direct (the lab has no NAT)", `uncloud_peer_path == 1`, func(ss []promSample) error {
		n := 0
		for _, s := range ss {
			if s.Metric["path"] != "direct" || s.Metric["via"] != "" {
				return fmt.Errorf("%s to %s: path %q via %q", s.Metric["machine"], s.Metric["peer"], s.Metric["path"], s.Metric["via"])
			}
			n++
		}
		if n != 6 {
			return fmt.Errorf("%d paths, want 6", n)
		}
		return nil
	})
	wait("bytes moved to every peer", `uncloud_peer_transmit_bytes_total > 0 and uncloud_peer_receive_bytes_total > 0`, func(ss []promSample) error {
		if len(ss) != 6 {
			return fmt.Errorf("%d pairs with bytes both ways, want 6", len(ss))
		}
		return nil
	})
	wait("gossip: 3 alive on every machine", `uncloud_gossip_members{state="alive"}`, func(ss []promSample) error {
		got := byMachine(ss, "")
		for _, m := range machines {
			if got[m] != 3 {
				return fmt.Errorf("alive members: %v", got)
			}
		}
		return nil
	})
	wait("3 machine records and a DAG everywhere", `uncloud_state_records{kind="machines"} == 3 and on(machine) uncloud_state_dag_blocks > 0 and on(machine) uncloud_state_dag_heads >= 1`, func(ss []promSample) error {
		if got := byMachine(ss, ""); len(got) != 3 {
			return fmt.Errorf("machines satisfying it: %v", got)
		}
		return nil
	})
	wait("Go runtime, process and container series everywhere", `count by (machine) (go_goroutines) + count by (machine) (process_resident_memory_bytes) + count by (machine) (uncloud_containers{state="running"})`, func(ss []promSample) error {
		if got := byMachine(ss, ""); len(got) != 3 || got["m1"] != 3 || got["m2"] != 3 || got["m3"] != 3 {
			return fmt.Errorf("per machine: %v", got)
		}
		return nil
	})

	// DNS: queries sent with dig to m1's resolver show up in its counters
	// as the resolver counted them (answered from the zone).
	const q = `uncloud_dns_query_results_total{machine="m1",result="zone"}`
	before := wait("m1's DNS counters", q, func(ss []promSample) error {
		if len(ss) != 1 {
			return fmt.Errorf("%d series", len(ss))
		}
		return nil
	})[0].Value
	const digs = 10
	for i := 0; i < digs; i++ {
		got, err := dig(ctx, hosts[0], addr["m1"], "m2.machine.internal", "A")
		if err != nil || !slices.Equal(got, []string{addr["m2"]}) {
			t.Fatalf("dig m2.machine.internal at m1: %v %v", got, err)
		}
	}
	after := wait("the digs counted", q, func(ss []promSample) error {
		if len(ss) != 1 || ss[0].Value < before+digs {
			return fmt.Errorf("zone answers %v, want ≥ %v", ss, before+digs)
		}
		return nil
	})
	t.Logf("m1's zone answers: %v before %d digs, %v after", before, digs, after[0].Value)
	wait("received counter too", `uncloud_dns_queries_total{machine="m1"} >= `+strconv.Itoa(int(before)+digs), func(ss []promSample) error {
		if len(ss) != 1 {
			return fmt.Errorf("%v", ss)
		}
		return nil
	})

	// Ingress: m1 takes the role; requests from m2 for a host no service
	// publishes are counted under "unmatched", whatever Host they named.
	if out, err := f.uncloud(ctx, t, 0, "machine", "role", "add", "m1", "ingress"); err != nil {
		t.Fatalf("machine role add m1 ingress: %v\n%s", err, out)
	}
	ingressURL := "http://" + hosts[0].Addr.String() + "/"
	answered := 0
	testkit.Eventually(t, "m1's ingress answers", 60*time.Second, func() error {
		status, _, err := httpGet(ctx, hosts[1], ingressURL)
		if err != nil {
			return err
		}
		answered++
		if status != http.StatusNotFound {
			return fmt.Errorf("HTTP %d", status)
		}
		return nil
	})
	for range 5 {
		if status, _, err := httpGet(ctx, hosts[1], ingressURL); err != nil || status != http.StatusNotFound {
			t.Fatalf("ingress: %d %v", status, err)
		}
		answered++
	}
	wait("the ingress's requests counted", `uncloud_ingress_requests_total{machine="m1"}`, func(ss []promSample) error {
		if len(ss) != 1 || ss[0].Metric["host"] != "unmatched" || ss[0].Metric["code"] != "4xx" || ss[0].Value != float64(answered) {
			return fmt.Errorf("want only host=unmatched code=4xx at %d", answered)
		}
		return nil
	})
	wait("and their latencies", `uncloud_ingress_request_duration_seconds_count{machine="m1",host="unmatched"}`, func(ss []promSample) error {
		if len(ss) != 1 || ss[0].Value != float64(answered) {
			return fmt.Errorf("want %d observations", answered)
		}
		return nil
	})
	t.Logf("all expected series in Prometheus %v after it started", time.Since(started).Round(time.Millisecond))
	for _, q := range []string{"scrape_samples_scraped", "scrape_duration_seconds"} {
		ss, err := promQuery(ctx, hosts[0], api, q)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %v", q, byMachine(ss, ""))
	}
}
