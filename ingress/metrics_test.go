package ingress

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/uncloud-mesh/uncloud/record"
)

// TestMetricsPerHost sends real requests through a real ingress and reads
// its metrics: per published host and status class, and clients' made-up
// Host headers all land in one "unmatched" series.
func TestMetricsPerHost(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	in := startIngress(t, st, func(c *Config) { c.Metrics = m })
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "one", nil)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	put(t, st, &record.Service{Name: "secure", Ports: []string{fmt.Sprintf("secure.test:%d/https", port)}})
	put(t, st, container("c1", "web", "127.0.0.2"))
	eventually(t, "route to web", func() bool {
		resp, body, err := get(t, noRedirect, in, "app.test", "/")
		return err == nil && resp.StatusCode == 200 && body == "one"
	})

	count := func(host, code string) float64 { return testutil.ToFloat64(m.requests.WithLabelValues(host, code)) }
	ok0, redirect0, unmatched0 := count("app.test", "2xx"), count("secure.test", "3xx"), count(unmatchedHost, "4xx")
	for i := 0; i < 5; i++ {
		if resp, _, err := get(t, noRedirect, in, "app.test", "/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("app.test: %v %v", resp, err)
		}
	}
	for i := 0; i < 3; i++ {
		if resp, _, err := get(t, noRedirect, in, "secure.test", "/"); err != nil || resp.StatusCode != 308 {
			t.Fatalf("secure.test: %v %v", resp, err)
		}
	}
	for i := 0; i < 20; i++ {
		if resp, _, err := get(t, noRedirect, in, fmt.Sprintf("scan%d.example", i), "/"); err != nil || resp.StatusCode != 404 {
			t.Fatalf("unknown host: %v %v", resp, err)
		}
	}
	// Both paths count a request once its answer went out, so the last
	// counts may lag the client by a moment: they are awaited.
	grown := func() bool {
		return count("app.test", "2xx")-ok0 >= 5 && count("secure.test", "3xx")-redirect0 >= 3 && count(unmatchedHost, "4xx")-unmatched0 >= 20
	}
	for deadline := time.Now().Add(5 * time.Second); !grown() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if d := count("app.test", "2xx") - ok0; d != 5 {
		t.Errorf("app.test 2xx grew by %v, want 5", d)
	}
	if d := count("secure.test", "3xx") - redirect0; d != 3 {
		t.Errorf("secure.test 3xx grew by %v, want 3", d)
	}
	if d := count(unmatchedHost, "4xx") - unmatched0; d != 20 {
		t.Errorf("unmatched 4xx grew by %v, want 20", d)
	}
	// Hosts: app.test, secure.test and unmatched, whatever clients sent.
	if n := testutil.CollectAndCount(m.duration); n > 3 {
		t.Errorf("%d latency series, want at most 3 (one per published host and unmatched)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "uncloud_ingress_request_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if s.GetLabel()[0].GetValue() == "app.test" && s.GetHistogram().GetSampleCount() < 5 {
				t.Errorf("app.test latency samples: %d, want ≥ 5", s.GetHistogram().GetSampleCount())
			}
		}
	}
}

func TestStatusClass(t *testing.T) {
	for status, want := range map[int]string{200: "2xx", 204: "2xx", 101: "1xx", 308: "3xx", 404: "4xx", 502: "5xx", 599: "5xx", 0: "other", 600: "other", 99: "other"} {
		if got := statusClass(status); got != want {
			t.Errorf("statusClass(%d) = %q, want %q", status, got, want)
		}
	}
}
