package resolver

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/record"
)

// seeds are the fuzz corpus written in code (testdata/fuzz has more):
// ordinary queries of each kind and classic broken packets.
func seeds() [][]byte {
	var out [][]byte
	for _, q := range []struct {
		name string
		t    uint16
		edns bool
	}{
		{"web.internal.", dns.TypeA, false}, {"WEB.internal.", dns.TypeAAAA, true},
		{"_http._tcp.web.internal.", dns.TypeSRV, true}, {"m1.machine.internal.", dns.TypeA, false},
		{"2.1.210.10.in-addr.arpa.", dns.TypePTR, false}, {"nope.internal.", dns.TypeTXT, true},
		{"example.com.", dns.TypeA, true}, {"internal.", dns.TypeANY, false},
	} {
		m := question(q.name, q.t)
		if q.edns {
			m.SetEdns0(4096, true)
		}
		p, _ := m.Pack()
		out = append(out, p)
	}
	out = append(out,
		nil, []byte{0}, make([]byte, 12),
		[]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1},                                                          // name pointing at itself
		[]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3, 'w', 'e', 'b', 0, 0, 1, 0, 1, 0, 0, 41, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff}, // OPT rdlen past the end
		[]byte{0, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},                                                        // counts with nothing behind
	)
	return out
}

func FuzzRespond(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	s := testServer(f, fixture())
	out := make([]byte, 0, maxMessage)
	key := make([]byte, 0, maxKey+1)
	f.Fuzz(func(t *testing.T, p []byte) {
		var rot uint32
		for _, tcp := range []bool{false, true} {
			resp, act := s.respond(p, out, key, tcp, &rot, netip.Addr{})
			if act != actReply {
				continue
			}
			if len(resp) < headerLen || resp[0] != p[0] || resp[1] != p[1] || resp[2]&0x80 == 0 {
				t.Fatalf("answer %x to %x: not a response with the query's ID", resp, p)
			}
			if !tcp && len(resp) > maxUDP {
				t.Fatalf("UDP answer of %d bytes", len(resp))
			}
			var m dns.Msg
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("answer %x to %x does not parse: %v", resp, p, err)
			}
		}
	})
}

// TestHostilePackets sends garbage over a real socket, then checks that
// the server still answers at once.
func TestHostilePackets(t *testing.T) {
	l := startLive(t, Config{}, nil)
	l.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	waitFor(t, l.udp, "m1.machine.internal.", []string{"10.210.1.1"})
	c, err := net.Dial("udp", l.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := seeds()
	junk = append(junk, make([]byte, 9000)) // oversized: arrives cut
	for range 2000 {
		b := make([]byte, 1+int(randByte())*4)
		rand.Read(b)
		junk = append(junk, b)
	}
	for _, j := range junk {
		c.Write(j)
	}
	waitFor(t, l.udp, "m1.machine.internal.", []string{"10.210.1.1"})

	// TCP: a length prefix promising more than arrives, then silence; a
	// zero length; random bytes. None may stall another connection.
	for _, b := range [][]byte{{0xff, 0xff, 1, 2, 3}, {0, 0}, junk[len(junk)-1]} {
		tc, err := net.Dial("tcp", l.tcp)
		if err != nil {
			t.Fatal(err)
		}
		tc.Write(b)
		defer tc.Close()
	}
	if r := exchange(t, "tcp", l.tcp, "m1.machine.internal.", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("TCP after garbage: %v", r)
	}
}

func randByte() byte {
	var b [1]byte
	rand.Read(b[:])
	return b[0]
}

// TestFlood floods the server with queries that each need a forward to an
// upstream that never answers, and holds more TCP connections open than
// allowed: goroutines stay bounded, and the zone is answered throughout.
func TestFlood(t *testing.T) {
	up := startUpstream(t)
	l := startLive(t, Config{Upstreams: []string{up.addr}, MaxForwards: 32, MaxTCPConns: 16,
		ForwardTimeout: 2 * time.Second}, nil)
	l.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	waitFor(t, l.udp, "m1.machine.internal.", []string{"10.210.1.1"})
	base := runtime.NumGoroutine()

	var conns []net.Conn
	for range 40 {
		tc, err := net.Dial("tcp", l.tcp)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	m := question("slow.example.", dns.TypeA)
	var wg sync.WaitGroup
	servfails := make(chan int, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", l.udp)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			// Read answers as they come, so the socket buffer never hides them.
			n := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 4096)
				for {
					c.SetReadDeadline(time.Now().Add(3 * time.Second))
					k, err := c.Read(buf)
					if err != nil {
						return
					}
					if k >= 4 && buf[3]&0xf == dns.RcodeServerFailure {
						n++
					}
				}
			}()
			for i := range 5000 {
				m.Id = uint16(w*5000 + i)
				p, _ := m.Pack()
				c.Write(p)
			}
			<-done
			servfails <- n
		}()
	}
	// During the flood the zone answers. The kernel may drop a datagram
	// when the socket buffer is full, so ask like a stub resolver does:
	// again after a second.
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	for i := range 20 {
		var r *dns.Msg
		var err error
		for range 5 {
			if r, _, err = c.Exchange(question("m1.machine.internal.", dns.TypeA), l.udp); err == nil {
				break
			}
		}
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("zone query %d during the flood: %v %v", i, r, err)
		}
	}
	if g := runtime.NumGoroutine(); g > base+32+16+100 {
		t.Fatalf("%d goroutines during the flood (%d before): not bounded", g, base)
	}
	wg.Wait()
	close(servfails)
	total := 0
	for n := range servfails {
		total += n
	}
	st := l.srv.Stats()
	if total == 0 || st.ServFail.Load() == 0 {
		t.Fatalf("no SERVFAIL seen (client %d, server %d): queries beyond the forward bound must be refused at once", total, st.ServFail.Load())
	}
	if st.TCPRefused.Load() == 0 {
		t.Fatal("40 TCP connections against a bound of 16 were all kept")
	}
	// Only 32 forwards at a time reached the upstream, not 20,000.
	if q := up.queries.Load(); q > 32*3 {
		t.Fatalf("upstream got %d queries: forwards are not bounded", q)
	}
}

// A TCP connection that sends a query and never reads must not block the
// server: its write times out.
func TestTCPLengthPrefix(t *testing.T) {
	l := startLive(t, Config{}, nil)
	l.put(t, &record.Machine{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"})
	waitFor(t, l.udp, "m1.machine.internal.", []string{"10.210.1.1"})
	c, err := net.Dial("tcp", l.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Two queries in one write (pipelining), answered in order.
	var buf []byte
	for i := range 2 {
		m := question("m1.machine.internal.", dns.TypeA)
		m.Id = uint16(100 + i)
		p, _ := m.Pack()
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p)))
		buf = append(buf, p...)
	}
	c.Write(buf)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 2 {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, p); err != nil {
			t.Fatal(err)
		}
		if id := binary.BigEndian.Uint16(p); id != uint16(100+i) {
			t.Fatalf("answer %d has id %d", i, id)
		}
	}
}
