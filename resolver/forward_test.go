package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstream is a real DNS server on loopback (UDP and TCP on one port):
// example.com. answers 192.0.2.1, big.example. has 100 addresses (TC over
// UDP), slow.example. never answers, fail.example. is SERVFAIL.
type upstream struct {
	addr    string
	queries atomic.Int64
	tcp     atomic.Int64
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	// The kernel picks a free UDP port; the same TCP port may be taken
	// (an outgoing connection's ephemeral port), so try a few.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
		u.queries.Add(1)
		tcp := w.LocalAddr().Network() == "tcp"
		if tcp {
			u.tcp.Add(1)
		}
		r := new(dns.Msg)
		r.SetReply(m)
		r.RecursionAvailable = true
		switch m.Question[0].Name {
		case "example.com.":
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		case "big.example.":
			for i := range 100 {
				r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: "big.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i))})
			}
			if !tcp {
				r.Answer, r.Truncated = nil, true
			}
		case "slow.example.":
			return // never answers
		case "fail.example.":
			r.Rcode = dns.RcodeServerFailure
		default:
			r.Rcode = dns.RcodeNameError
			r.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
				Ns: "ns.example.", Mbox: "h.example.", Minttl: 30}}
		}
		w.WriteMsg(r)
	})
	us := &dns.Server{PacketConn: pc, Handler: h}
	ts := &dns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return u
}

func TestForwarding(t *testing.T) {
	up := startUpstream(t)
	l := startLive(t, Config{Upstreams: []string{up.addr}, ForwardTimeout: 1500 * time.Millisecond}, nil)

	r := exchange(t, "udp", l.udp, "example.com.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Fatalf("forwarded answer: %v", r)
	}
	if !r.RecursionAvailable {
		t.Fatal("RA not set on a forwarded answer")
	}
	n := up.queries.Load()
	r = exchange(t, "udp", l.udp, "EXAMPLE.com.", dns.TypeA)
	if len(r.Answer) != 1 || up.queries.Load() != n {
		t.Fatalf("second query: %d answers, upstream asked %d more times (want a cache hit)", len(r.Answer), up.queries.Load()-n)
	}
	if r.Question[0].Name != "EXAMPLE.com." {
		t.Fatalf("cached answer's question %q, want the client's spelling", r.Question[0].Name)
	}
	if r.Answer[0].Header().Ttl > 60 {
		t.Fatalf("cached TTL %d grew", r.Answer[0].Header().Ttl)
	}

	// Truncated upstream answer: retried over TCP; our client asked with
	// 1232 bytes over UDP, so it gets TC and its own TCP retry works.
	tcpBefore := up.tcp.Load()
	r = exchange(t, "udp", l.udp, "big.example.", dns.TypeA)
	if !r.Truncated || up.tcp.Load() == tcpBefore {
		t.Fatalf("big answer over UDP: TC %v, upstream TCP queries %d", r.Truncated, up.tcp.Load()-tcpBefore)
	}
	if r = exchange(t, "tcp", l.tcp, "big.example.", dns.TypeA); len(r.Answer) != 100 {
		t.Fatalf("big answer over TCP: %d answers", len(r.Answer))
	}

	// Negative answers are forwarded as they are.
	if r = exchange(t, "udp", l.udp, "nope.example.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("upstream NXDOMAIN came back as %s", dns.RcodeToString[r.Rcode])
	}
	// An upstream that never answers: SERVFAIL within the timeout.
	start := time.Now()
	if r = exchange(t, "udp", l.udp, "slow.example.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("silent upstream: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("SERVFAIL took %v", d)
	}
	if r = exchange(t, "udp", l.udp, "fail.example.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("upstream SERVFAIL: %s", dns.RcodeToString[r.Rcode])
	}
	// .internal is never forwarded.
	n = up.queries.Load()
	if r = exchange(t, "udp", l.udp, "missing.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError || up.queries.Load() != n {
		t.Fatalf("missing.internal: %s, upstream asked %d times", dns.RcodeToString[r.Rcode], up.queries.Load()-n)
	}
}

func TestForwardingNoUpstreamAnswers(t *testing.T) {
	// A port where nothing listens: the upstream is down.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	l := startLive(t, Config{Upstreams: []string{dead}, ForwardTimeout: time.Second}, nil)
	if r := exchange(t, "udp", l.udp, "example.com.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("dead upstream: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	os.WriteFile(path, []byte("search example\nnameserver 10.210.1.1\nnameserver 192.0.2.53\noptions ndots:1\n"), 0o644)
	idx := NewIndex("id1", nil, quietLog())
	s, err := NewServer(Config{Index: idx, ResolvConf: path, Exclude: []netip.Addr{netip.MustParseAddr("10.210.1.1")}, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Upstreams()); got != "[192.0.2.53:53]" {
		t.Fatalf("upstreams %s, want the resolv.conf one that is not this server", got)
	}
	if _, err := NewServer(Config{Index: idx, Upstreams: []string{"dns.example"}}); err == nil {
		t.Fatal("a host name as upstream was accepted")
	}
}

func TestQueryForwardsInProcess(t *testing.T) {
	up := startUpstream(t)
	idx := NewIndex("id1", nil, quietLog())
	s, err := NewServer(Config{Index: idx, Upstreams: []string{up.addr}, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Query(context.Background(), "example.com", dns.TypeA)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("in-process forwarded query: %v %v", r, err)
	}
}
