package nat

import (
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// One probe for both ends of a direct path.
//
// Both machines of a pair used to probe their direct path every
// directProbeInterval, each for its own proof that the path works both
// ways: two round trips per pair and interval, with 20 peers the largest
// part of an idle agent's CPU. One round trip can prove it to both ends:
// the prober's request carries an echo, the newest timestamp (attrTime)
// it has received from the other end on this path. That end stamped the
// message itself and sent it to its direct endpoint, so the echo proves
// its packets arrive there; the request proves the prober's arrive here.
// An end that accepts an echo counts its direct path as answered now. The
// end with the higher key (the one that does not start handshakes either,
// see firstHandshake) then holds back its own probe a little longer than
// the interval, so in a steady state the lower-key end probes for both;
// the higher-key end probes for itself when the other's probes stop
// coming. Without the tie-break two ends whose timers fire within a
// round trip of each other would cross probes and both hold back, in
// step, forever.
//
// Only a strictly newer echo of a stamp this machine sent to its current
// direct endpoint counts: a prober that stopped hearing this machine
// keeps echoing an old stamp, which proves nothing, so this machine
// probes for itself, and loses the path directDeadAfter after the last
// real proof (at most one interval later than if it had probed itself,
// and only when the path fails in one direction).

// echoRing is how many stamps sent to the direct endpoint are remembered:
// an echo refers to one of the last few messages, never an old one.
const echoRing = 4

// echoHoldBack is how much longer than directProbeInterval an end that
// accepted an echo waits before probing itself: the prober's next
// request, due one interval after its last, arrives first even when its
// loop ticks late.
const echoHoldBack = directProbeInterval / 4

// echoState is one peer's side of the shared probe; owned by the manager
// loop (under Manager.mu).
type echoState struct {
	sent     [echoRing]int64 // stamps of the last messages sent to the direct endpoint
	next     int
	accepted int64 // the newest stamp accepted as echoed
	heard    int64 // the newest stamp of the peer's received on the direct path: echoed back
}

// stampOf is an authenticated message's attrTime in unix nanoseconds.
func stampOf(msg *stun.Message) int64 {
	ts, err := messageTime(msg)
	if err != nil {
		return 0
	}
	return ts.UnixNano()
}

// onDirectPath reports whether addr is p's chosen direct endpoint: only
// messages there take part in the shared probe.
func (p *peer) onDirectPath(addr netip.AddrPort) bool {
	return p.path == PathDirect && p.direct == addr
}

// noteSent remembers the stamp of a message sent to p's direct endpoint.
func (p *peer) noteSent(msg *stun.Message, to netip.AddrPort) {
	if !p.onDirectPath(to) {
		return
	}
	if st := stampOf(msg); st != 0 {
		p.echo.sent[p.echo.next] = st
		p.echo.next = (p.echo.next + 1) % echoRing
	}
}

// echoSetter is the echo for a probe to addr, or nil when there is
// nothing to echo there.
func (p *peer) echoSetter(addr netip.AddrPort) stun.Setter {
	if !p.onDirectPath(addr) || p.echo.heard == 0 {
		return nil
	}
	return echoAttr(time.Unix(0, p.echo.heard))
}

// onDirectMessage takes an authenticated message that came straight from
// p's direct endpoint: its stamp is what to echo next, and an echo in a
// request that proves this machine's packets arrive makes the path
// answered now; holdBack: this end leaves the probing to the peer. It
// reports whether the echo was accepted.
func (p *peer) onDirectMessage(msg *stun.Message, from netip.AddrPort, now time.Time, holdBack bool) bool {
	if !p.onDirectPath(from) {
		return false
	}
	if st := stampOf(msg); st > p.echo.heard {
		p.echo.heard = st
	}
	if msg.Type != stun.BindingRequest {
		return false
	}
	e, ok := echoOf(msg)
	if !ok || e <= p.echo.accepted {
		return false
	}
	known := false
	for _, st := range p.echo.sent {
		known = known || (st != 0 && st == e)
	}
	if !known {
		return false
	}
	p.echo.accepted = e
	p.directOK = now
	if holdBack {
		p.lastDirectTx = now.Add(echoHoldBack)
	}
	return true
}
