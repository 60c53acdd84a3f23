package resolver

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Sizes of the wire protocol.
const (
	headerLen = 12
	optLen    = 11 // an OPT record without options
	// advertisedUDP is the EDNS0 buffer size this server announces (the
	// DNS flag day 2020 value: no fragmentation on common paths).
	advertisedUDP = 1232
	// maxUDP caps what a client may ask for over UDP; larger answers go
	// over TCP.
	maxUDP = 4096
	// maxMessage is the largest DNS message (TCP length prefix).
	maxMessage = 65535
	// maxKey is the longest lowercase presentation name a query may have.
	maxKey = 255
)

// Header flag bits.
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagCD = 1 << 4
)

// action says what to do with a message after respond.
type action int

const (
	actDrop    action = iota // no answer (a response, or not DNS at all)
	actReply                 // send out
	actForward               // not ours: ask the upstreams
	actAnswer                // slowQuery only: answer the canonical query from the zone
)

// query is what the hot path needs from a request.
type query struct {
	id, flags     uint16
	qtype, qclass uint16
	qend          int // end of the question section in the packet
	edns          bool
	udpSize       uint16
	version       uint8
	do            bool
}

// parseQuery reads an ordinary query: one question, no records but at
// most one OPT, a name in plain labels. It writes the name, lowercase and
// dotted, into key. Anything else (ok false) goes the slow way, which
// handles it or answers with the right error.
func parseQuery(p []byte, key []byte) (q query, k []byte, ok bool) {
	if len(p) < headerLen {
		return q, key, false
	}
	q.id = binary.BigEndian.Uint16(p)
	q.flags = binary.BigEndian.Uint16(p[2:])
	if q.flags&flagQR != 0 || (q.flags>>11)&0xf != dns.OpcodeQuery ||
		binary.BigEndian.Uint16(p[4:]) != 1 || binary.BigEndian.Uint16(p[6:]) != 0 ||
		binary.BigEndian.Uint16(p[8:]) != 0 {
		return q, key, false
	}
	ar := binary.BigEndian.Uint16(p[10:])
	if ar > 1 {
		return q, key, false
	}
	off := headerLen
	k = key[:0]
	for {
		if off >= len(p) {
			return q, k, false
		}
		l := int(p[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(p) || len(k)+l+1 > maxKey {
			return q, k, false // compression pointer, extended label, or too long
		}
		for _, c := range p[off : off+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			} else if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return q, k, false // needs escaping: the slow path names it properly
			}
			k = append(k, c)
		}
		k = append(k, '.')
		off += l
	}
	if len(k) == 0 {
		k = append(k, '.')
	}
	if off+4 > len(p) {
		return q, k, false
	}
	q.qtype = binary.BigEndian.Uint16(p[off:])
	q.qclass = binary.BigEndian.Uint16(p[off+2:])
	off += 4
	q.qend = off
	if q.qclass != dns.ClassINET {
		return q, k, false
	}
	if ar == 1 {
		if off+optLen > len(p) || p[off] != 0 || binary.BigEndian.Uint16(p[off+1:]) != dns.TypeOPT {
			return q, k, false
		}
		q.edns = true
		q.udpSize = binary.BigEndian.Uint16(p[off+3:])
		q.version = p[off+6]
		q.do = p[off+7]&0x80 != 0
		if q.version != 0 {
			return q, k, false // BADVERS, from the slow path
		}
		off += optLen + int(binary.BigEndian.Uint16(p[off+9:])) // options are ignored (RFC 6891 6.1.2)
	}
	if off != len(p) {
		return q, k, false
	}
	return q, k, true
}

// limit is the largest answer the client takes on this transport.
func (q *query) limit(tcp bool) int {
	switch {
	case tcp:
		return maxMessage
	case !q.edns:
		return dns.MinMsgSize
	}
	return min(max(int(q.udpSize), dns.MinMsgSize), maxUDP)
}

// assemble writes the answer into out: the query's header and question
// (the client's spelling, so 0x20 case randomization survives), then the
// pre-packed body, then an OPT record if the query had one. An answer
// that does not fit goes out empty with TC set, and the client retries
// over TCP.
func assemble(out, p []byte, q *query, pk *packed, body []byte, limit int, ra bool) []byte {
	out = append(out[:0], p[:q.qend]...)
	flags := flagQR | flagAA | q.flags&(flagRD|flagCD) | uint16(pk.rcode&0xf)
	if ra {
		flags |= flagRA
	}
	an, ns, ar := pk.an, pk.ns, pk.ar
	extra := 0
	if q.edns {
		extra = optLen
	}
	if q.qend+len(body)+extra > limit {
		flags |= flagTC
		an, ns, ar, body = 0, 0, 0, nil
	}
	if q.edns {
		ar++
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	binary.BigEndian.PutUint16(out[4:], 1)
	binary.BigEndian.PutUint16(out[6:], an)
	binary.BigEndian.PutUint16(out[8:], ns)
	binary.BigEndian.PutUint16(out[10:], ar)
	out = append(out, body...)
	if q.edns {
		out = appendOPT(out, pk.rcode>>4, q.do)
	}
	return out
}

// appendOPT adds this server's OPT record.
func appendOPT(out []byte, extRcode int, do bool) []byte {
	var fl byte
	if do {
		fl = 0x80
	}
	return append(out, 0, 0, byte(dns.TypeOPT), byte(advertisedUDP>>8), byte(advertisedUDP&0xff),
		byte(extRcode), 0, fl, 0, 0, 0)
}

// lookupKey is zone.lookup for a key in a byte slice, without allocating.
func (z *zone) lookupKey(key []byte, qtype uint16, from netip.Addr) (*packed, bool) {
	if len(z.projectOf) > 0 {
		if project, ok := z.projectOf[from.Unmap()]; ok {
			if n := z.projects[project][string(key)]; n != nil {
				return n.answer(qtype), true
			}
		}
	}
	if n := z.nodes[string(key)]; n != nil {
		return n.answer(qtype), true
	}
	for _, a := range z.apexes {
		if bytes.Equal(key, a.key) || (len(key) > len(a.key) && bytes.HasSuffix(key, a.key) && key[len(key)-len(a.key)-1] == '.') {
			return a.nx, true
		}
	}
	return nil, false
}

// answer picks the packed answer of a node for qtype.
func (n *node) answer(qtype uint16) *packed {
	if qtype == dns.TypeANY {
		// RFC 8482: a subset is a fine answer to ANY; A where there is one.
		if len(n.answers) == 0 {
			return n.nodata
		}
		return n.answers[0].p
	}
	for i := range n.answers {
		if n.answers[i].qtype == qtype {
			return n.answers[i].p
		}
	}
	return n.nodata
}

// slowQuery handles what parseQuery does not: it parses with miekg/dns
// and answers errors itself (FORMERR, NOTIMP, REFUSED, BADVERS). For an
// ordinary question it returns a canonical packet (header and question
// only) and the query for it, to be answered like a fast one.
func slowQuery(p []byte, out []byte) (canon []byte, q query, key string, resp []byte, act action) {
	var m dns.Msg
	if err := m.Unpack(p); err != nil {
		if len(p) < headerLen || p[2]&0x80 != 0 {
			return nil, q, "", nil, actDrop
		}
		// Not parseable: FORMERR with the header's ID and opcode only.
		out = append(out[:0], p[:headerLen]...)
		out[2] = 0x80 | p[2]&(0x78|0x01) // QR, opcode, RD
		out[3] = dns.RcodeFormatError
		clear(out[4:12])
		return nil, q, "", out, actReply
	}
	if m.Response {
		return nil, q, "", nil, actDrop
	}
	reply := func(r *dns.Msg) ([]byte, query, string, []byte, action) {
		b, err := r.PackBuffer(out[:0])
		if err != nil {
			return nil, q, "", nil, actDrop
		}
		return nil, q, "", b, actReply
	}
	r := new(dns.Msg)
	switch {
	case m.Opcode != dns.OpcodeQuery:
		r.SetRcode(&m, dns.RcodeNotImplemented)
		return reply(r)
	case len(m.Question) != 1:
		r.SetRcode(&m, dns.RcodeFormatError)
		r.Question = nil
		return reply(r)
	}
	opt := m.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		r.SetRcode(&m, dns.RcodeBadVers)
		r.SetEdns0(advertisedUDP, opt.Do())
		r.IsEdns0().SetExtendedRcode(dns.RcodeBadVers)
		return reply(r)
	}
	key = strings.ToLower(dns.Fqdn(m.Question[0].Name))
	if m.Question[0].Qclass != dns.ClassINET && m.Question[0].Qclass != dns.ClassANY {
		if inZone(key, apexInternal) || inZone(key, apexReverse) {
			r.SetRcode(&m, dns.RcodeRefused)
			return reply(r)
		}
		return nil, q, key, nil, actForward
	}
	// An ordinary question in an unusual packet (a compressed name,
	// escapes, extra records): re-pack it plainly and answer it fast.
	c := &dns.Msg{MsgHdr: dns.MsgHdr{Id: m.Id, RecursionDesired: m.RecursionDesired, CheckingDisabled: m.CheckingDisabled},
		Question: m.Question[:1]}
	canon, err := c.Pack()
	if err != nil {
		return nil, q, "", nil, actDrop
	}
	q = query{id: m.Id, flags: binary.BigEndian.Uint16(canon[2:]), qtype: m.Question[0].Qtype,
		qclass: dns.ClassINET, qend: len(canon)}
	if opt != nil {
		q.edns, q.udpSize, q.do = true, opt.UDPSize(), opt.Do()
	}
	return canon, q, key, nil, actAnswer
}
