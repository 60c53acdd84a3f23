package e2e

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestLogsOfSeveralServices: `uncloud logs` on m2 (no containers there)
// reads the services' containers on m1 and m3 through their machine APIs:
// every service or those named, -n per container, --until, -t, and -f
// seeing a new line as it is written.
func TestLogsOfSeveralServices(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, noDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m3"); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	for _, run := range [][]string{{"web", "m1"}, {"db", "m3"}, {"cache", "m1"}} {
		if out, err := c.uncloud(ctx, t, 0, "run", "--name", run[0], "-m", run[1], "--pull", "never", testimage.Tag); err != nil {
			t.Fatalf("run %s: %v\n%s", run[0], err, out)
		}
	}
	for _, s := range []string{"web", "db", "cache"} {
		c.running(ctx, t, 1, s, 1)
	}
	// Each request is a log line of the server: "request /PATH from …".
	hit := func(service, path string) {
		t.Helper()
		if out, err := c.uncloud(ctx, t, 0, "exec", service, "/echoserver", "get", "http://127.0.0.1:8080/"+path); err != nil {
			t.Fatalf("request %s of %s: %v\n%s", path, service, err, out)
		}
	}
	hit("web", "web-first")
	hit("db", "db-first")
	hit("cache", "cache-first")
	time.Sleep(1100 * time.Millisecond) // one whole second between the two rounds, for --until
	cut := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(100 * time.Millisecond)
	hit("web", "web-second")
	hit("db", "db-second")

	logs := func(args ...string) string {
		t.Helper()
		out, err := c.uncloud(ctx, t, 1, append([]string{"logs"}, args...)...)
		if err != nil {
			t.Fatalf("logs %v: %v\n%s", args, err, out)
		}
		return out
	}
	has := func(what, out string, want, not []string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: no %q in\n%s", what, w, out)
			}
		}
		for _, n := range not {
			if strings.Contains(out, n) {
				t.Errorf("%s: %q should not be in\n%s", what, n, out)
			}
		}
	}

	all := logs()
	has("every service", all, []string{"/web-first", "/db-first", "/cache-first", "/web-second", "/db-second", "@m1 | ", "@m3 | "}, nil)
	if strings.Index(all, "/web-first") > strings.Index(all, "/db-first") || strings.Index(all, "/db-first") > strings.Index(all, "/web-second") {
		t.Errorf("not merged in time order:\n%s", all)
	}
	has("web db", logs("web", "db"), []string{"/web-first", "/db-second"}, []string{"/cache-first"})
	has("-n 1", logs("web", "db", "-n", "1"), []string{"/web-second", "/db-second"}, []string{"/web-first", "/db-first"})
	has("--until", logs("--until", cut), []string{"/web-first", "/db-first", "/cache-first"}, []string{"/web-second", "/db-second"})
	has("--since", logs("web", "--since", cut), []string{"/web-second"}, []string{"/web-first"})
	for _, l := range strings.Split(strings.TrimSpace(logs("cache", "-t")), "\n") {
		ts, rest, _ := strings.Cut(l, " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || !strings.HasPrefix(rest, "cache-") {
			t.Errorf("-t line %q", l)
		}
	}
	if out, err := c.uncloud(ctx, t, 1, "logs", "web", "nope"); err == nil || !strings.Contains(err.Error()+out, `no service "nope"`) {
		t.Errorf("an unknown service: %v\n%s", err, out)
	}

	t.Run("-f", func(t *testing.T) {
		fctx, cancel := context.WithCancel(ctx)
		cmd := c.hosts[1].Command(fctx, c.lab.Uncloud, "logs", "-f", "-n", "0", "web", "db")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); cmd.Wait() }() // -f ends only when stopped
		var mu sync.Mutex
		var seen []string
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				mu.Lock()
				seen = append(seen, sc.Text())
				mu.Unlock()
			}
		}()
		time.Sleep(time.Second) // following
		hit("db", "db-followed")
		hit("cache", "cache-not-followed")
		hit("web", "web-followed")
		eventuallyE2E(t, "followed lines", 20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			got := strings.Join(seen, "\n")
			if !strings.Contains(got, "/db-followed") || !strings.Contains(got, "/web-followed") {
				return fmt.Errorf("seen so far:\n%s", got)
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(seen, "\n"); strings.Contains(got, "cache-not-followed") || strings.Contains(got, "-first") {
			t.Errorf("-f web db -n 0 showed\n%s", got)
		}
	})
}
