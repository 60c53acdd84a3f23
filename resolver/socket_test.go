package resolver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// live is a resolver on loopback fed by a real store.
type live struct {
	store *crdt.Store
	idx   *Index
	srv   *Server
	udp   string
	tcp   string
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startLive opens a store in a temp dir, follows it with an index and
// serves on loopback (two UDP sockets sharing a port, one TCP listener).
func startLive(t *testing.T, cfg Config, reach Reachability) *live {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := crdt.Open(ctx, crdt.Config{Dir: t.TempDir(), Name: "id1", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	l := &live{store: store, idx: NewIndex("id1", reach, quietLog())}
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); store.Close() })
	wg.Add(1)
	go func() { defer wg.Done(); l.idx.Run(ctx, store) }()
	select {
	case <-l.idx.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("index not ready after 30 s")
	}
	cfg.Index = l.idx
	if cfg.Logger == nil {
		cfg.Logger = quietLog()
	}
	if len(cfg.Upstreams) == 0 && cfg.ResolvConf == "" {
		cfg.ResolvConf = "/nonexistent"
	}
	if l.srv, err = NewServer(cfg); err != nil {
		t.Fatal(err)
	}
	// UDP and TCP on the same port, as dig's TCP retry expects. The free
	// UDP port the kernel picks may be taken for TCP: try another.
	var pcs []net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		if pcs, err = ListenUDP(ctx, "127.0.0.1:0", 2); err != nil {
			t.Fatal(err)
		}
		if ln, err = ListenTCP(ctx, pcs[0].LocalAddr().String()); err == nil {
			break
		}
		for _, pc := range pcs {
			pc.Close()
		}
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	l.udp = pcs[0].LocalAddr().String()
	for _, pc := range pcs {
		wg.Add(1)
		go func() { defer wg.Done(); l.srv.ServePacket(ctx, pc) }()
	}
	l.tcp = ln.Addr().String()
	wg.Add(1)
	go func() { defer wg.Done(); l.srv.ServeStream(ctx, ln) }()
	return l
}

func (l *live) put(t *testing.T, r crdt.Record) {
	t.Helper()
	if err := l.store.Put(context.Background(), r.Key(), r); err != nil {
		t.Fatal(err)
	}
}

// exchange asks over the network with the miekg/dns client.
func exchange(t *testing.T, netw, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second}
	m := question(name, qtype)
	m.SetEdns0(1232, false)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", netw, name, dns.TypeToString[qtype], err)
	}
	return r
}

// waitFor asks until the sorted answers are want (the store is followed
// through its watch; replication and the rebuild take a moment).
func waitFor(t *testing.T, addr, name string, want []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got []string
	var err error
	// Like a stub resolver, ask again after a second without an answer:
	// on a loaded machine the kernel may drop a datagram (a full socket
	// buffer after a flood); a server that stopped answering still fails.
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	for time.Now().Before(deadline) {
		m := question(name, dns.TypeA)
		m.SetEdns0(1232, false)
		var r *dns.Msg
		if r, _, err = c.Exchange(m, addr); err == nil {
			if got = values(r.Answer); slices.Equal(got, want) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: answers %v (last error %v), want %v", name, got, err, want)
}

func TestLiveStoreAnswers(t *testing.T) {
	l := startLive(t, Config{}, nil)
	if r := exchange(t, "udp", l.udp, "m1.machine.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("empty store: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	l.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	waitFor(t, l.udp, "m1.machine.internal.", []string{"10.210.1.1"})

	c := &record.Container{MachineID: "id1", ID: "a", Name: "web-1", Service: "web", Address: "10.210.1.2", State: "running"}
	l.put(t, c)
	waitFor(t, l.udp, "web.internal.", []string{"10.210.1.2"})
	l.put(t, &record.Container{MachineID: "id1", ID: "b", Name: "web-2", Service: "web", Address: "10.210.1.3", State: "running"})
	waitFor(t, l.udp, "web.internal.", []string{"10.210.1.2", "10.210.1.3"})

	// Unhealthy leaves the service, stopped leaves the name, deleted is gone.
	c.Health = "unhealthy"
	l.put(t, c)
	waitFor(t, l.udp, "web.internal.", []string{"10.210.1.3"})
	waitFor(t, l.udp, "web-1.m1.machine.internal.", []string{"10.210.1.2"})
	c.State = "exited"
	l.put(t, c)
	waitFor(t, l.udp, "web-1.m1.machine.internal.", nil)
	if err := l.store.Delete(context.Background(), "/containers/id1/b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, l.udp, "web.internal.", nil)
	// The service has no record, so with no container the name is gone.
	if r := exchange(t, "tcp", l.tcp, "web.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("service with no record and no containers: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

// reach is a Reachability a test flips.
type reach struct {
	mu   sync.Mutex
	down map[string]bool
	ch   chan struct{}
}

func (r *reach) Reachable(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.down[id]
}
func (r *reach) Changed() <-chan struct{} { return r.ch }
func (r *reach) set(id string, down bool) {
	r.mu.Lock()
	r.down[id] = down
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func TestLiveReachability(t *testing.T) {
	rc := &reach{down: map[string]bool{}, ch: make(chan struct{}, 1)}
	l := startLive(t, Config{}, rc)
	for i := 1; i <= 3; i++ {
		l.put(t, &record.Machine{ID: fmt.Sprintf("id%d", i), Name: fmt.Sprintf("m%d", i), Subnet: fmt.Sprintf("10.210.%d.0/24", i)})
		l.put(t, &record.Container{MachineID: fmt.Sprintf("id%d", i), ID: "a", Name: "web", Service: "web",
			Address: fmt.Sprintf("10.210.%d.2", i), State: "running"})
	}
	all := []string{"10.210.1.2", "10.210.2.2", "10.210.3.2"}
	waitFor(t, l.udp, "web.internal.", all)
	rc.set("id3", true)
	waitFor(t, l.udp, "web.internal.", all[:2])
	waitFor(t, l.udp, "m3.machine.internal.", nil)
	rc.set("id1", true) // this machine is always reachable
	rc.set("id3", false)
	waitFor(t, l.udp, "web.internal.", all)
}

func TestDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (Debian dnsutils; scripts/test installs it)")
	}
	l := startLive(t, Config{}, nil)
	l.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	for i := range 100 {
		l.put(t, &record.Container{MachineID: "id1", ID: fmt.Sprint(i), Name: fmt.Sprintf("big-%d", i), Service: "big",
			Address: fmt.Sprintf("10.210.1.%d", i+2), State: "running",
			Ports: []record.ContainerPort{{Port: 8080, Protocol: "tcp", Name: "http"}}})
	}
	host, port, _ := net.SplitHostPort(l.udp)
	dig := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+time=5", "+tries=1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(dig("big-99.m1.machine.internal", "+short"), "10.210.1.101") {
		if time.Now().After(deadline) {
			t.Fatal("dig never saw big-99")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := strings.TrimSpace(dig("M1.Machine.Internal", "+short")); got != "10.210.1.1" {
		t.Fatalf("dig machine: %q", got)
	}
	// 100 addresses do not fit in 1232 bytes: dig gets TC over UDP and
	// retries over TCP on its own.
	out := dig("big.internal", "A")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || !strings.Contains(out, "ANSWER: 100") {
		t.Fatalf("big answer: want TC then 100 answers over TCP:\n%s", out)
	}
	if out := dig("+tcp", "_http._tcp.big.internal", "SRV"); !strings.Contains(out, "ANSWER: 100") || !strings.Contains(out, "8080 big-7.m1.machine.internal.") {
		t.Fatalf("SRV over TCP:\n%s", out)
	}
	if out := dig("big.internal", "AAAA"); !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0") || !strings.Contains(out, "AUTHORITY: 1") {
		t.Fatalf("AAAA: want NODATA with SOA:\n%s", out)
	}
	if out := dig("nothing.internal", "A"); !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "AUTHORITY: 1") {
		t.Fatalf("missing name: want NXDOMAIN with SOA:\n%s", out)
	}
	if out := dig("-x", "10.210.1.5", "+short"); strings.TrimSpace(out) != "big-3.m1.machine.internal." {
		t.Fatalf("reverse: %q", out)
	}
}

// A client outside Allow gets no answer at all, over UDP or TCP.
func TestAllow(t *testing.T) {
	mesh := netip.MustParsePrefix("10.210.0.0/16")
	l := startLive(t, Config{Allow: []netip.Prefix{mesh}}, nil)
	l.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	for _, netw := range []string{"udp", "tcp"} {
		addr := l.udp
		if netw == "tcp" {
			addr = l.tcp
		}
		c := &dns.Client{Net: netw, Timeout: 500 * time.Millisecond}
		if r, _, err := c.Exchange(question("m1.machine.internal.", dns.TypeA), addr); err == nil {
			t.Fatalf("%s from 127.0.0.1, outside %v: answered %v", netw, mesh, r)
		}
	}
	if l.srv.Stats().Denied.Load() == 0 {
		t.Fatal("denied clients not counted")
	}
	// Loopback allowed: answered.
	l2 := startLive(t, Config{Allow: []netip.Prefix{mesh, netip.MustParsePrefix("127.0.0.0/8")}}, nil)
	l2.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	waitFor(t, l2.udp, "m1.machine.internal.", []string{"10.210.1.1"})
}
