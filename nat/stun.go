package nat

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v3"
)

// Our own attributes, in the comprehension-optional range so that any
// STUN implementation may ignore them.
const (
	attrTime       stun.AttrType = 0xC0A1 // 8 bytes: sender's clock, unix nanoseconds
	attrCandidates stun.AttrType = 0xC0A2 // text: "ip:port,ip:port,…"
	attrNAT        stun.AttrType = 0xC0A3 // text: the sender's NAT type
	// attrEcho: 8 bytes, unix nanoseconds: the newest attrTime the sender
	// has received from the addressee on its direct path (echo.go).
	attrEcho stun.AttrType = 0xC0A4
)

// usernamePrefix marks a probe or call-me-maybe between two machines;
// a binding request without it is plain endpoint discovery.
const usernamePrefix = "uc1:"

// callMeMaybe is a binding indication: "probe me now, here are my
// candidates". It needs no answer.
var callMeMaybe = stun.NewType(stun.MethodBinding, stun.ClassIndication)

// maxClockSkew bounds how old (or how far in the future) an authenticated
// message may be. Within the window, transaction IDs are remembered, so a
// replay is refused either way.
const maxClockSkew = 30 * time.Second

// Errors of message checks; the manager counts them by kind.
var (
	errNotForUs  = errors.New("not addressed to this machine")
	errUnknown   = errors.New("from an unknown machine")
	errIntegrity = errors.New("message integrity check failed")
	errStale     = errors.New("timestamp outside the accepted window")
	errReplay    = errors.New("transaction already seen")
)

// discoveryRequest is a plain STUN binding request: any machine (or a
// public STUN server) answers it with the address it saw.
func discoveryRequest() (*stun.Message, error) {
	return stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
}

// bindingSuccess answers a request with the address it came from.
func bindingSuccess(req *stun.Message, from netip.AddrPort, extra ...stun.Setter) (*stun.Message, error) {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IP(from.Addr().AsSlice()), Port: int(from.Port())},
	}
	setters = append(setters, extra...)
	return stun.Build(setters...)
}

// mappedAddress reads XOR-MAPPED-ADDRESS from a success response.
func mappedAddress(m *stun.Message) (netip.AddrPort, error) {
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		return netip.AddrPort{}, fmt.Errorf("binding response: %w", err)
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("binding response: bad mapped address %v", xa.IP)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), nil
}

func username(from, to keyID) stun.Username {
	return stun.NewUsername(usernamePrefix + from.String() + ":" + to.String())
}

// parseUsername returns the two machine IDs of an authenticated message,
// or ok=false for a message that does not claim to be one.
func parseUsername(m *stun.Message) (from, to keyID, ok bool) {
	var u stun.Username
	if err := u.GetFrom(m); err != nil {
		return from, to, false
	}
	rest, found := strings.CutPrefix(u.String(), usernamePrefix)
	if !found {
		return from, to, false
	}
	a, b, found := strings.Cut(rest, ":")
	if !found || !parseID(a, &from) || !parseID(b, &to) {
		return from, to, false
	}
	return from, to, true
}

func parseID(s string, id *keyID) bool {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return false
	}
	copy(id[:], b)
	return true
}

// nanosAttr is an 8-byte attribute of unix nanoseconds: attrTime (the
// sender's clock) or attrEcho.
type nanosAttr struct {
	t  stun.AttrType
	ns int64
}

func (a nanosAttr) AddTo(m *stun.Message) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(a.ns))
	m.Add(a.t, b[:])
	return nil
}

func timeAttr(t time.Time) nanosAttr { return nanosAttr{attrTime, t.UnixNano()} }
func echoAttr(t time.Time) nanosAttr { return nanosAttr{attrEcho, t.UnixNano()} }

// nanosOf reads a nanosAttr of type t; ok is false without one.
func nanosOf(m *stun.Message, t stun.AttrType) (int64, bool) {
	v, err := m.Get(t)
	if err != nil || len(v) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

func messageTime(m *stun.Message) (time.Time, error) {
	ns, ok := nanosOf(m, attrTime)
	if !ok {
		return time.Time{}, fmt.Errorf("no timestamp")
	}
	return time.Unix(0, ns), nil
}

// echoOf reads attrEcho, as unix nanoseconds; ok is false without one.
func echoOf(m *stun.Message) (int64, bool) { return nanosOf(m, attrEcho) }

type textAttr struct {
	t stun.AttrType
	v string
}

func (a textAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, []byte(a.v))
	return nil
}

func textOf(m *stun.Message, t stun.AttrType) string {
	v, err := m.Get(t)
	if err != nil {
		return ""
	}
	return string(v)
}

func candidatesAttr(cands []netip.AddrPort) textAttr {
	s := make([]string, len(cands))
	for i, c := range cands {
		s[i] = c.String()
	}
	return textAttr{attrCandidates, strings.Join(s, ",")}
}

// parseCandidates reads the candidates of a call-me-maybe, skipping what
// does not parse (a later version may send more kinds). It reads at most
// maxPeerCandidates of them, from at most maxCandidatesAttr bytes, and
// says how many it dropped.
func parseCandidates(m *stun.Message) ([]netip.AddrPort, int) {
	v := textOf(m, attrCandidates)
	if v == "" {
		return nil, 0
	}
	dropped := 0
	if len(v) > maxCandidatesAttr {
		v, dropped = v[:maxCandidatesAttr], 1
	}
	var out []netip.AddrPort
	parts := strings.Split(v, ",")
	for i, s := range parts {
		if i == maxPeerCandidates {
			dropped += len(parts) - i
			break
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil || !ap.Addr().IsValid() || ap.Port() == 0 {
			dropped++
			continue
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return out, dropped
}

// authenticated builds a message between two machines: USERNAME naming
// both, a timestamp, MESSAGE-INTEGRITY with the pair's probe key, and a
// FINGERPRINT (which must come last).
func authenticated(key [32]byte, from, to keyID, head []stun.Setter, extra ...stun.Setter) (*stun.Message, error) {
	setters := append(head, username(from, to), timeAttr(time.Now()))
	setters = append(setters, extra...)
	setters = append(setters, stun.NewShortTermIntegrity(string(key[:])), stun.Fingerprint)
	return stun.Build(setters...)
}

// checkAuthenticated verifies the integrity and freshness of a message
// from a machine that holds the other half of key.
func checkAuthenticated(m *stun.Message, key [32]byte, now time.Time) error {
	if err := stun.NewShortTermIntegrity(string(key[:])).Check(m); err != nil {
		return errIntegrity
	}
	ts, err := messageTime(m)
	if err != nil {
		return errStale
	}
	if d := now.Sub(ts); d > maxClockSkew || d < -maxClockSkew {
		return errStale
	}
	return nil
}
