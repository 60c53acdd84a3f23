package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends names outside the zone to the upstream resolvers: over
// UDP, again over TCP when the answer is truncated, one upstream after the
// other within one deadline. A bounded number run at once; a query that
// finds no room, or no upstream that answers, gets SERVFAIL, never
// silence. Answers are cached for their TTL.
type forwarder struct {
	upstreams []string
	timeout   time.Duration
	sem       chan struct{}
	cache     *cache
	stats     *Stats
	udp, tcp  *dns.Client
}

func newForwarder(upstreams []string, maxInFlight int, timeout time.Duration, cacheSize int, st *Stats) *forwarder {
	if maxInFlight <= 0 {
		maxInFlight = 256
	}
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	if cacheSize <= 0 {
		cacheSize = 2048
	}
	return &forwarder{upstreams: upstreams, timeout: timeout, sem: make(chan struct{}, maxInFlight),
		cache: newCache(cacheSize), stats: st,
		udp: &dns.Client{Net: "udp", UDPSize: dns.DefaultMsgSize},
		tcp: &dns.Client{Net: "tcp"}}
}

// start parses p (so the caller may reuse it at once) and answers it in
// the background through reply. reply(nil) means nothing is sent back.
func (f *forwarder) start(ctx context.Context, p []byte, tcp bool, reply replier) {
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil || len(m.Question) != 1 || m.Response {
		reply(nil)
		return
	}
	limit := dns.MinMsgSize
	if tcp {
		limit = dns.MaxMsgSize
	} else if opt := m.IsEdns0(); opt != nil {
		limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDP)
	}
	if r := f.cache.get(m); r != nil {
		f.stats.CacheHits.Add(1)
		reply(pack(r, limit))
		return
	}
	select {
	case f.sem <- struct{}{}:
	default:
		f.stats.ServFail.Add(1)
		reply(pack(servfail(m), limit))
		return
	}
	f.stats.Forwarded.Add(1)
	go func() {
		defer func() { <-f.sem }()
		reply(pack(f.resolve(ctx, m), limit))
	}()
}

// resolve asks the upstreams in turn; it always returns an answer.
func (f *forwarder) resolve(ctx context.Context, m *dns.Msg) *dns.Msg {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	per := max(f.timeout/time.Duration(len(f.upstreams)), 500*time.Millisecond)
	id := m.Id
	var last *dns.Msg
	for _, up := range f.upstreams {
		if ctx.Err() != nil {
			break
		}
		r := f.exchange(ctx, m, up, per)
		if r == nil {
			continue
		}
		last = r
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			continue // another upstream may do better
		}
		break
	}
	if last == nil {
		f.stats.ServFail.Add(1)
		m.Id = id
		return servfail(m)
	}
	last.Id = id
	last.Question = m.Question // the client's spelling
	f.cache.put(m, last)
	return last
}

// exchange asks one upstream: UDP, then TCP if the answer was truncated.
// The query goes out under a fresh random ID (the client's is not a
// secret), and miekg/dns checks the answer's ID and question.
func (f *forwarder) exchange(ctx context.Context, m *dns.Msg, up string, per time.Duration) *dns.Msg {
	ctx, cancel := context.WithTimeout(ctx, per)
	defer cancel()
	q := m.Copy()
	q.Id = dns.Id()
	r, _, err := f.udp.ExchangeContext(ctx, q, up)
	if err == nil && r.Truncated {
		q.Id = dns.Id()
		r, _, err = f.tcp.ExchangeContext(ctx, q, up)
	}
	if err != nil {
		return nil
	}
	return r
}

// pack packs r for a client that takes limit bytes, truncating (TC) what
// does not fit.
func pack(r *dns.Msg, limit int) []byte {
	if r == nil {
		return nil
	}
	if r.Len() > limit {
		r = r.Copy()
		r.Truncate(limit)
	}
	b, err := r.Pack()
	if err != nil {
		return nil
	}
	return b
}

func servfail(m *dns.Msg) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(m, dns.RcodeServerFailure)
	r.RecursionAvailable = true
	if opt := m.IsEdns0(); opt != nil {
		r.SetEdns0(advertisedUDP, opt.Do())
	}
	return r
}

// refused answers a query this server will not forward; nil for garbage.
func refused(p []byte) []byte {
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil || m.Response {
		return nil
	}
	r := new(dns.Msg)
	r.SetRcode(m, dns.RcodeRefused)
	if opt := m.IsEdns0(); opt != nil {
		r.SetEdns0(advertisedUDP, opt.Do())
	}
	b, err := r.Pack()
	if err != nil {
		return nil
	}
	return b
}

// readResolvConf returns the nameservers of a resolv.conf file.
func readResolvConf(path string) ([]string, error) {
	if path == "" {
		path = "/etc/resolv.conf"
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("read upstreams: %w", err)
	}
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read upstreams from %s: %w", path, err)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out, nil
}

// normalizeUpstreams turns "IP" and "IP:port" into "IP:port" and drops
// this server's own addresses (a loop).
func normalizeUpstreams(in []string, exclude []netip.Addr) ([]string, error) {
	var out []string
	for _, u := range in {
		ap, err := netip.ParseAddrPort(u)
		if err != nil {
			a, err2 := netip.ParseAddr(strings.Trim(u, "[]"))
			if err2 != nil {
				return nil, fmt.Errorf("resolver: upstream %q is not IP or IP:port", u)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		own := false
		for _, e := range exclude {
			if ap.Addr().Unmap() == e.Unmap() {
				own = true
			}
		}
		if !own {
			out = append(out, ap.String())
		}
	}
	return out, nil
}

// cache keeps forwarded answers for their TTL (at most 5 minutes; a
// negative answer for the SOA minimum, at most 1 minute). When full it
// drops expired entries, then arbitrary ones.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]cacheEntry
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

func newCache(n int) *cache { return &cache{max: n, entries: map[string]cacheEntry{}} }

func cacheKey(m *dns.Msg) string {
	q := m.Question[0]
	do := false
	if opt := m.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	return fmt.Sprintf("%s/%d/%d/%t/%t", strings.ToLower(q.Name), q.Qtype, q.Qclass, do, m.CheckingDisabled)
}

func (c *cache) get(m *dns.Msg) *dns.Msg {
	k := cacheKey(m)
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && now.After(e.expires) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	r := e.msg.Copy()
	r.Id = m.Id
	r.Question = m.Question
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return r
}

func (c *cache) put(m, r *dns.Msg) {
	ttl, ok := cacheTTL(r)
	if !ok {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[cacheKey(m)] = cacheEntry{msg: r.Copy(), stored: now, expires: now.Add(ttl)}
}

// cacheTTL is how long r may be kept; ok is false for what is not kept
// (errors other than NXDOMAIN, truncated answers).
func cacheTTL(r *dns.Msg) (time.Duration, bool) {
	if r.Truncated || (r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError) {
		return 0, false
	}
	if len(r.Answer) == 0 {
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return time.Duration(min(soa.Minttl, soa.Hdr.Ttl, 60)) * time.Second, true
			}
		}
		return 0, false
	}
	ttl := uint32(300)
	for _, rr := range r.Answer {
		ttl = min(ttl, rr.Header().Ttl)
	}
	if ttl == 0 {
		return 0, false
	}
	return time.Duration(ttl) * time.Second, true
}
