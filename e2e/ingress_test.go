package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
)

// ingressHelpers are the lab helper modes of the ingress test.
var ingressHelpers = map[string]lab.HelperFunc{
	"httpserve": helperHTTPServe,
	"httpprobe": helperHTTPProbe,
	"httpload":  helperHTTPLoad,
}

// helperHTTPServe is a plain HTTP server that answers its -name: a
// stand-in for a container, listening on the machine's mesh address.
func helperHTTPServe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("httpserve", flag.ContinueOnError)
	listen := fs.String("listen", "", "address:port")
	name := fs.String("name", "", "answer")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, *name)
	})}
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Fprintf(stdout, "ready %s\n", ln.Addr())
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// helperHTTPProbe sends a request every -every to -url with Host -host
// and prints one line per request: "ok <body>" or "fail <error>".
func helperHTTPProbe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("httpprobe", flag.ContinueOnError)
	url := fs.String("url", "", "URL")
	host := fs.String("host", "", "Host header")
	every := fs.Duration("every", 200*time.Millisecond, "interval")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// Generous: a request sent into a partition waits until gossip
	// declares the machine dead, then is retried elsewhere.
	client := &http.Client{Timeout: 45 * time.Second}
	fmt.Fprintf(stdout, "ready probing\n")
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", *url, nil)
		req.Host = *host
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintf(stdout, "fail %v\n", err)
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				fmt.Fprintf(stdout, "fail status %d %q\n", resp.StatusCode, body)
			} else {
				fmt.Fprintf(stdout, "ok %s %dms\n", body, time.Since(start).Milliseconds())
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(*every):
		}
	}
	return nil
}

// writeRecords puts records into host i's replica while its agent is
// stopped, then starts the agent again; replication carries them to the
// others. The agent has no API yet that writes service or container
// records for a process that is not a container (the runtime's work), so
// this is the one shortcut of the test: the records enter the real state
// of a real machine, everything after that (replication, the ingress
// role, routes, the mesh, balancing) is production code.
func (f *formed) writeRecords(ctx context.Context, t *testing.T, i int, machineID string, put []crdt.Record, del []string) {
	t.Helper()
	f.procs[i].Signal(syscall.SIGTERM)
	f.procs[i].Wait(ctx)
	st, err := crdt.Open(ctx, crdt.Config{Dir: filepath.Join(f.hosts[i].Dir, "lib", "state"), Name: machineID,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("open %s's state: %v", f.hosts[i].Name, err)
	}
	// Each record is signed as its owner would sign it (a container by
	// its machine, the rest by the writer), or every reader ignores it.
	signers := map[string]*trust.Signer{}
	for _, h := range f.hosts {
		s := hostSigner(t, h)
		signers[s.SignerID()] = s
	}
	for _, r := range put {
		signer := signers[machineID]
		if c, ok := r.(*record.Container); ok {
			signer = signers[c.MachineID]
		}
		raw, err := crdt.EncodeSigned(r, signer)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutUnchecked(ctx, r.Key(), raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range del {
		if err := st.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	f.startAgent(ctx, t, i, "agent")
}

func (f *formed) ingressStatus(ctx context.Context, t *testing.T, i int) api.IngressStatus {
	t.Helper()
	out, err := f.uncloud(ctx, t, i, "ingress", "ls", "-o", "json")
	if err != nil {
		t.Fatalf("ingress ls on %s: %v\n%s", f.hosts[i].Name, err, out)
	}
	var st api.IngressStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ingress ls: %v\n%s", err, out)
	}
	return st
}

// TestIngress: a service on m1 and m2 behind the ingress of m3 (netstack
// mode: it dials the backends through its netstack), probed from m4's
// namespace over the underlay. Requests keep succeeding while a backend
// is added, one is removed, and while m2 is cut off the network.
func TestIngress(t *testing.T) {
	ctx := context.Background()
	f := form(ctx, t, 4, map[int]bool{2: true})
	f.waitAllAlive(ctx, t, 60*time.Second)
	ms := map[string]api.MachineInfo{}
	for _, m := range f.machines(ctx, t, 0) {
		ms[m.Name] = m
	}
	for _, h := range []int{0, 1} {
		m := ms[fmt.Sprintf("m%d", h+1)]
		if _, err := f.hosts[h].StartHelper(ctx, "backend", "httpserve", true,
			"-listen", m.Address+":8080", "-name", m.Name); err != nil {
			t.Fatal(err)
		}
	}
	ctr := func(m string) *record.Container {
		return &record.Container{MachineID: ms[m].ID, ID: "c-" + m, Name: "web-" + m, Service: "web",
			Address: ms[m].Address, State: "running"}
	}
	waitRoutes := func(t *testing.T, what string, ok func(api.IngressStatus) bool) {
		t.Helper()
		testkit.Eventually(t, "m3's ingress "+what, 30*time.Second, func() error {
			if st := f.ingressStatus(ctx, t, 2); !ok(st) {
				return fmt.Errorf("routes %+v", st)
			}
			return nil
		})
	}
	// The probe, from m4's namespace; started once m3 routes app.test.
	var probe *lab.Process
	waitBody := func(t *testing.T, from int, body string) int {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		n, err := probe.WaitOutput(wctx, from, "ok "+body)
		if err != nil {
			t.Fatalf("no answer from %s: %v\n%s", body, err, probe.Output())
		}
		return n
	}
	mark := 0

	if !t.Run("m3 given the ingress role: its ingress runs, m1 runs none", func(t *testing.T) {
		if out, err := f.uncloud(ctx, t, 0, "machine", "role", "add", "m3", "ingress"); err != nil {
			t.Fatalf("role add: %v\n%s", err, out)
		}
		testkit.EventuallyTrue(t, "m3's ingress running after the role was added", 30*time.Second, func() bool {
			return f.ingressStatus(ctx, t, 2).Running
		})
		if st := f.ingressStatus(ctx, t, 0); st.Running {
			t.Fatal("m1 runs an ingress without the role")
		}
	}) {
		return
	}

	if !t.Run("service web with m1's container: m3 serves app.test from m1", func(t *testing.T) {
		// m4 writes: the service and m1's container first.
		f.writeRecords(ctx, t, 3, ms["m4"].ID, []crdt.Record{
			&record.Service{Name: "web", Ports: []string{"app.test:8080/http"}}, ctr("m1")}, nil)
		// The probe starts once m3 routes app.test to m1's container: a
		// request sent before the route exists is rightly answered 404, and
		// the last phase counts every failure from the probe's first request.
		waitRoutes(t, "routing app.test to m1", func(st api.IngressStatus) bool {
			return len(st.Routes) == 1 && len(st.Routes[0].Backends) == 1 && st.Routes[0].Backends[0].Machine == ms["m1"].ID
		})
		var err error
		probe, err = f.hosts[3].StartHelper(ctx, "probe", "httpprobe", true,
			"-url", "http://"+f.hosts[2].Addr.String()+"/", "-host", "app.test", "-every", "200ms")
		if err != nil {
			t.Fatal(err)
		}
		mark = waitBody(t, 0, "m1")
	}) {
		return
	}

	if !t.Run("m2's container added: both answer", func(t *testing.T) {
		f.writeRecords(ctx, t, 3, ms["m4"].ID, []crdt.Record{ctr("m2")}, nil)
		mark = waitBody(t, mark, "m2")
		mark = waitBody(t, mark, "m1")
		st := f.ingressStatus(ctx, t, 2)
		if len(st.Routes) != 1 || len(st.Routes[0].Backends) != 2 {
			t.Fatalf("ingress ls on m3: %+v", st)
		}
	}) {
		return
	}

	if !t.Run("m1's container removed: only m2 answers", func(t *testing.T) {
		f.writeRecords(ctx, t, 3, ms["m4"].ID, nil, []string{ctr("m1").Key()})
		waitRoutes(t, "routing to m2 alone", func(st api.IngressStatus) bool {
			return len(st.Routes) == 1 && len(st.Routes[0].Backends) == 1 && st.Routes[0].Backends[0].Machine == ms["m2"].ID
		})
		// The probe is sequential: the request in flight when the route
		// changed may still have gone to m1. Its answer is the next line;
		// every request after it was sent with m2 alone routed.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		if mark, err = probe.WaitOutput(wctx, len(probe.Output()), "\n"); err != nil {
			t.Fatal(err)
		}
		// Observation window, not a wait: for the next 2 s every answer
		// comes from m2 and none from m1.
		time.Sleep(2 * time.Second)
		if recent := probe.Output()[mark:]; strings.Contains(recent, "ok m1") || !strings.Contains(recent, "ok m2") {
			t.Fatalf("after removal: %q", recent)
		}
	}) {
		return
	}

	// A request sent to m2 right after the cut waits until gossip declares
	// m2 dead (seconds); then its connection is cut and the request is
	// retried on m1, and m2 leaves the routes.
	t.Run("m1's container back, m2 cut off: m1 keeps answering", func(t *testing.T) {
		f.writeRecords(ctx, t, 3, ms["m4"].ID, []crdt.Record{ctr("m1")}, nil)
		waitBody(t, len(probe.Output()), "m1")
		if out, err := f.hosts[1].Run(ctx, "ip", "link", "set", "eth0", "down"); err != nil {
			t.Fatalf("cut m2: %v %s", err, out)
		}
		cut := len(probe.Output())
		// Observation window, not a wait: 30 s while m2 is cut off, in
		// which no request may fail.
		time.Sleep(30 * time.Second)
		after := probe.Output()[cut:]
		slowest := 0
		for _, line := range strings.Split(after, "\n") {
			var body string
			var ms int
			if n, _ := fmt.Sscanf(line, "ok %s %dms", &body, &ms); n == 2 && ms > slowest {
				slowest = ms
			}
		}
		t.Logf("while m2 is cut off: %d answers, slowest %d ms (a request caught in the partition waits for gossip to declare m2 dead)",
			strings.Count(after, "ok m1"), slowest)
		if strings.Contains(after, "fail") {
			t.Fatalf("requests failed while m2 was cut off:\n%s", after)
		}
		if strings.Count(after, "ok m1") < 10 {
			t.Fatalf("too few answers while m2 was cut off:\n%s", after)
		}
		if out := probe.Output(); strings.Contains(out, "fail") {
			t.Fatalf("some request failed:\n%s", out)
		}
	})
}
