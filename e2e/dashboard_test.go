package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestDashboard drives the web dashboard in a real headless Chromium
// against a 3-machine lab: `uncloud ui` on the test machine reaches m1's
// agent over its unix socket, the browser logs in with the one-time
// secret, sees the machines and a service, deploys a Compose file through
// the page, watches m3 being cut off, and a cross-site POST is refused.
// Screenshots of every page go to the test's temp dir and
// /tmp/uncloud-ui-shots.
func TestDashboard(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on this machine: install chromium to run the dashboard test")
	}
	start := time.Now()
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, noDocker, noDocker)
	t.Logf("lab up in %v", time.Since(start).Round(time.Millisecond))
	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "hello", "-m", "m1", "--pull", "never", testimage.Tag); err != nil {
		t.Fatalf("run hello: %v\n%s", err, out)
	}
	agent := c.procs[0]
	rssBefore, err := agent.RSS()
	if err != nil {
		t.Fatal(err)
	}

	shots := filepath.Join(t.TempDir(), "shots")
	os.MkdirAll(shots, 0o755)
	os.MkdirAll("/tmp/uncloud-ui-shots", 0o755)

	// uncloud ui runs on the test machine, as a user's CLI would, and
	// reaches m1's agent through its socket.
	sock := filepath.Join(c.hosts[0].Dir, "run", filepath.Base(api.DefaultSocket))
	uiCtx, stopUI := context.WithCancel(ctx)
	defer stopUI()
	ui := exec.CommandContext(uiCtx, c.lab.Uncloud, "--connect", sock, "ui")
	stdout, err := ui.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var uiErr strings.Builder
	ui.Stderr = &uiErr
	if err := ui.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopUI(); ui.Wait() })
	urlRe := regexp.MustCompile(`http://127\.0\.0\.1:\d+/ui/login\?secret=([0-9a-f]+)`)
	var loginURL, secret string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if m := urlRe.FindStringSubmatch(sc.Text()); m != nil {
			loginURL, secret = m[0], m[1]
			break
		}
	}
	if loginURL == "" {
		t.Fatalf("uncloud ui printed no login link: %s", uiErr.String())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if len(secret) < 32 {
		t.Fatalf("secret %q has under 128 bits", secret)
	}
	base := strings.SplitN(loginURL, "/ui/", 2)[0]

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	// The first call starts the browser, on a context without a deadline.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	run := func(t *testing.T, what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if err := chromedp.Do(tctx, actions...); err != nil {
			pctx, cancel := context.WithTimeout(bctx, 5*time.Second)
			defer cancel()
			body, _ := chromedp.Run(pctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
			t.Fatalf("%s: %v; page: %s", what, err, body)
		}
	}
	// get runs one action that gives a value.
	get := func(t *testing.T, what string, timeout time.Duration, a any) any {
		t.Helper()
		tctx, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		var v any
		var err error
		switch a := a.(type) {
		case chromedp.Action[string]:
			v, err = chromedp.Run(tctx, a)
		case chromedp.Action[[]byte]:
			v, err = chromedp.Run(tctx, a)
		case chromedp.Action[float64]:
			v, err = chromedp.Run(tctx, a)
		case chromedp.Action[bool]:
			v, err = chromedp.Run(tctx, a)
		default:
			t.Fatalf("%s: an action of type %T", what, a)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	shot := func(t *testing.T, name string) {
		t.Helper()
		png := get(t, "screenshot "+name, 20*time.Second, chromedp.FullScreenshot(100)).([]byte)
		for _, dir := range []string{shots, "/tmp/uncloud-ui-shots"} {
			if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	// waitJS waits for a JavaScript condition to hold in the page.
	waitJS := func(t *testing.T, what, cond string, timeout time.Duration) time.Duration {
		t.Helper()
		began := time.Now()
		deadline := began.Add(timeout)
		for {
			tctx, cancel := context.WithTimeout(bctx, 5*time.Second)
			ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](cond))
			cancel()
			if err == nil && ok {
				return time.Since(began)
			}
			if time.Now().After(deadline) {
				tctx, cancel := context.WithTimeout(bctx, 5*time.Second)
				body, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("body")))
				cancel()
				t.Fatalf("%s: not within %v (err %v); page: %s", what, timeout, err, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	bodyText := func(t *testing.T) string {
		return get(t, "read the page", 10*time.Second, chromedp.Text(chromedp.CSS("body"))).(string)
	}
	// weight is what the page loaded: the document and its assets, not
	// the event stream that keeps it live.
	weight := func(t *testing.T) int {
		return int(get(t, "page weight", 10*time.Second, chromedp.Evaluate[float64](`performance.getEntries().filter(e => e.decodedBodySize !== undefined && !/events|stream/.test(e.name)).reduce((s, e) => s + e.decodedBodySize, 0)`)).(float64))
	}

	t.Run("a wrong secret is refused", func(t *testing.T) {
		run(t, "open a wrong link", 20*time.Second, chromedp.Navigate(base+"/ui/login?secret="+strings.Repeat("0", len(secret))))
		if s := bodyText(t); !strings.Contains(s, "Refused") {
			t.Fatalf("a wrong secret got: %s", s)
		}
		run(t, "open the dashboard without a session", 20*time.Second, chromedp.Navigate(base+"/ui/"))
		if s := bodyText(t); !strings.Contains(s, "Not logged in") {
			t.Fatalf("no session got: %s", s)
		}
	})

	t.Run("log in and see 3 machines", func(t *testing.T) {
		began := time.Now()
		run(t, "log in", 20*time.Second, chromedp.Navigate(loginURL), chromedp.WaitVisible(chromedp.CSS("#machines")))
		firstRender := time.Since(began)
		dcl := get(t, "navigation timing", 5*time.Second, chromedp.Evaluate[float64](`performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd`)).(float64)
		t.Logf("FIGURE time to first render: %v from navigating to the login link to the machines table shown (login and redirect included); the overview's DOMContentLoaded %.0f ms after its navigation started", firstRender.Round(time.Millisecond), dcl)
		waitJS(t, "3 machines, m2 and m3 alive, live", `document.querySelectorAll('#machines tbody tr').length === 3 &&
			document.querySelector('tr[data-machine="m2"]').dataset.state === 'alive' &&
			document.querySelector('tr[data-machine="m3"]').dataset.state === 'alive' &&
			document.getElementById('conn').textContent === 'live'`, 30*time.Second)
		// The load and memory columns come from each machine's own report.
		waitJS(t, "m2's own report", `!/–/.test(document.querySelector('tr[data-machine="m2"] td:nth-child(7)').textContent)`, 15*time.Second)
		t.Logf("FIGURE page weight, overview: %d bytes", weight(t))
		shot(t, "1-overview")
		run(t, "phone width", 10*time.Second, chromedp.EmulateViewport(390, 844))
		shot(t, "1-overview-phone")
		run(t, "desktop width", 10*time.Second, chromedp.EmulateViewport(1280, 900))
	})

	t.Run("a reused secret is refused", func(t *testing.T) {
		// Another browser profile (as another local user would be).
		other, cancel := chromedp.NewContext(actx)
		defer cancel()
		tctx, cancel2 := context.WithTimeout(other, 20*time.Second)
		defer cancel2()
		if err := chromedp.Do(tctx, chromedp.Navigate(loginURL)); err != nil {
			t.Fatal(err)
		}
		s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("body")))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(s, "Refused") {
			t.Fatalf("the used link got: %s", s)
		}
	})

	t.Run("the mesh picture", func(t *testing.T) {
		run(t, "open the mesh", 20*time.Second, chromedp.Navigate(base+"/ui/mesh"), chromedp.WaitVisible(chromedp.CSS("svg.mesh")))
		waitJS(t, "3 direct pairs", `document.querySelectorAll('svg.mesh g.edge[data-path="direct"]').length === 3`, 30*time.Second)
		t.Logf("FIGURE page weight, mesh: %d bytes", weight(t))
		shot(t, "2-mesh")
	})

	t.Run("a service's containers, live", func(t *testing.T) {
		run(t, "open services", 20*time.Second, chromedp.Navigate(base+"/ui/services"), chromedp.WaitVisible(chromedp.CSS(`[data-service="hello"]`)))
		waitJS(t, "hello's container running", `document.querySelectorAll('[data-service="hello"] tr[data-state="running"]').length === 1`, 20*time.Second)
		out, err := c.uncloud(ctx, t, 0, "scale", "hello", "2")
		if err != nil {
			t.Fatalf("scale: %v\n%s", err, out)
		}
		waitJS(t, "hello's second container", `document.querySelectorAll('[data-service="hello"] tr[data-state="running"]').length === 2`, 20*time.Second)
		shown := time.Now()
		var newest time.Time
		for _, ci := range c.ps(ctx, t, 0) {
			if ci.Service == "hello" && ci.Created.After(newest) {
				newest = ci.Created
			}
		}
		t.Logf("FIGURE the new container's creation (Docker's time) to the page showing it running: %v (the page is checked every 50 ms)", shown.Sub(newest).Round(time.Millisecond))
		t.Logf("FIGURE page weight, services: %d bytes", weight(t))
		shot(t, "3-services")
	})

	t.Run("logs", func(t *testing.T) {
		run(t, "open logs", 20*time.Second, chromedp.Navigate(base+"/ui/logs?service=hello"), chromedp.WaitVisible(chromedp.CSS("#logs")))
		waitJS(t, "following", `/following hello/.test(document.getElementById('logstate').textContent)`, 10*time.Second)
		t.Logf("FIGURE page weight, logs: %d bytes", weight(t))
		shot(t, "4-logs")
	})

	t.Run("a cross-site POST is refused", func(t *testing.T) {
		// A page of another origin that the user visits posts a removal
		// to the dashboard in the user's browser.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<form id="f" method="post" action="%s/ui/services/hello/remove"></form><script>document.getElementById('f').submit()</script>`, base)
		}))
		defer evil.Close()
		run(t, "visit the other site", 20*time.Second, chromedp.Navigate(evil.URL))
		waitJS(t, "the post answered", `location.href.indexOf('/ui/services/hello/remove') >= 0 && document.body && document.body.innerText.length > 0`, 15*time.Second)
		// The other site is 127.0.0.1 on another port: the same site, so
		// the browser does send the cookie, and the origin check refuses.
		if s := bodyText(t); !strings.Contains(s, "refused: a state-changing request from another site") {
			t.Fatalf("the cross-site POST got: %s", s)
		}
		var res []api.ContainerInfo
		if err := c.ucJSON(ctx, t, 0, &res, "ps", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ci := range res {
			if ci.Service == "hello" {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("hello has %d containers after the refused removal, want 2", n)
		}
	})

	t.Run("deploy a Compose file through the page", func(t *testing.T) {
		compose := fmt.Sprintf("services:\n  web:\n    image: %s\n    pull_policy: never\n    x-machines: [m1]\n    deploy:\n      replicas: 2\n", testimage.Tag)
		run(t, "open deploy", 20*time.Second, chromedp.Navigate(base+"/ui/deploy"), chromedp.WaitVisible(chromedp.CSS("#deploy textarea")),
			chromedp.SetValue(chromedp.CSS(`#deploy input[name="project"]`), "shop"),
			chromedp.SetValue(chromedp.CSS("#deploy textarea"), compose),
			chromedp.Click(chromedp.CSS(`#deploy button[value="plan"]`)))
		waitJS(t, "the plan", `/plan only/.test(document.getElementById('deployout').textContent)`, 30*time.Second)
		plan := get(t, "read the plan", 5*time.Second, chromedp.Text(chromedp.CSS("#deployout"))).(string)
		if !strings.Contains(plan, "create web") {
			t.Fatalf("plan: %s", plan)
		}
		shot(t, "5-deploy-plan")
		run(t, "apply", 10*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(window.confirm = () => true, true)`)(ctx, tg)
			return err
		}), chromedp.Click(chromedp.CSS(`#deploy button[value="apply"]`)))
		waitJS(t, "deployed", `/Deployed\./.test(document.getElementById('deployout').textContent)`, 60*time.Second)
		t.Logf("FIGURE page weight, deploy: %d bytes", weight(t))
		shot(t, "5-deploy-applied")
		run(t, "open services", 20*time.Second, chromedp.Navigate(base+"/ui/services"), chromedp.WaitVisible(chromedp.CSS(`[data-service="web.shop"]`)))
		waitJS(t, "web.shop's 2 containers running", `document.querySelectorAll('[data-service="web.shop"] tr[data-state="running"]').length === 2`, 30*time.Second)
		shot(t, "3-services-after-deploy")
	})

	t.Run("agent memory with a dashboard open", func(t *testing.T) {
		run(t, "close the dashboard", 20*time.Second, chromedp.Navigate("about:blank"))
		time.Sleep(3 * time.Second) // an observation window: no page open
		closed, err := agent.RSS()
		if err != nil {
			t.Fatal(err)
		}
		run(t, "open the overview", 20*time.Second, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#machines")))
		time.Sleep(5 * time.Second) // an observation window: the page stays open and live
		open, err := agent.RSS()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("FIGURE m1 agent RSS %d KiB with no dashboard open, %d KiB with the overview open for 5 s (%+d KiB; %d KiB at the start, before hello, the deploy and any page)", closed>>10, open>>10, (open-closed)>>10, rssBefore>>10)
	})

	t.Run("cut m3 off: the overview and the mesh say so", func(t *testing.T) {
		p, err := c.lab.Partition(ctx, []*lab.Host{c.hosts[0], c.hosts[1]}, []*lab.Host{c.hosts[2]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Heal(context.Background()) })
		cut := time.Now()
		took := waitJS(t, "m3 unreachable on the overview", `['down','unreachable'].includes(document.querySelector('tr[data-machine="m3"]').dataset.state) &&
			document.querySelector('[data-unseen="m3"]') !== null`, 60*time.Second)
		t.Logf("FIGURE m3 shown unreachable on the overview %v after the cut", took.Round(time.Millisecond))
		shot(t, "6-overview-partition")
		run(t, "open the mesh", 20*time.Second, chromedp.Navigate(base+"/ui/mesh"), chromedp.WaitVisible(chromedp.CSS("svg.mesh")))
		waitJS(t, "m3 cut off in the picture", `['down','unreachable'].includes(document.querySelector('g.node[data-machine="m3"]').dataset.state) &&
			document.querySelector('g.edge[data-pair="m1-m3"]').dataset.path === 'cut' &&
			document.querySelector('g.edge[data-pair="m2-m3"]').dataset.path === 'cut' &&
			document.querySelector('g.edge[data-pair="m1-m2"]').dataset.path === 'direct'`, 30*time.Second)
		t.Logf("FIGURE mesh picture shows m3 cut off %v after the cut", time.Since(cut).Round(time.Millisecond))
		shot(t, "7-mesh-partition")
	})
	t.Logf("screenshots in %s and /tmp/uncloud-ui-shots; whole test %v", shots, time.Since(start).Round(time.Millisecond))
}
