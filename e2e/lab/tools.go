package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DialOptions say how a host reaches a mesh address.
type DialOptions struct {
	// SOCKS5 is the agent's proxy on a netstack host (whose kernel has no
	// route into the mesh); zero means dial directly.
	SOCKS5 netip.AddrPort
	// Timeout bounds the whole operation; zero means a default per helper.
	Timeout time.Duration
}

func (o DialOptions) args() []string {
	var a []string
	if o.SOCKS5.IsValid() {
		a = append(a, "-socks5", o.SOCKS5.String())
	}
	if o.Timeout > 0 {
		a = append(a, "-timeout", o.Timeout.String())
	}
	return a
}

// Ping sends ICMP echo requests from h to addr until count replies came
// back or timeout passed. No reply is not an error: check Received.
func (h *Host) Ping(ctx context.Context, addr netip.Addr, count int, timeout time.Duration) (PingResult, error) {
	var res PingResult
	err := h.runHelperJSON(ctx, &res, "ping", "-addr", addr.String(),
		"-count", strconv.Itoa(count), "-timeout", timeout.String())
	return res, err
}

// Sink is a one-shot TCP receiver started by StartSink.
type Sink struct {
	Proc *Process
	Addr netip.AddrPort // where it listens
}

// StartSink listens on listen inside h for one TCP transfer.
func (h *Host) StartSink(ctx context.Context, label string, listen netip.AddrPort, timeout time.Duration) (*Sink, error) {
	p, err := h.startHelper(ctx, label, "sink", true, "-listen", listen.String(), "-timeout", timeout.String())
	if err != nil {
		return nil, err
	}
	return &Sink{Proc: p, Addr: listen}, nil
}

// Result waits for the transfer to end and returns what arrived.
func (s *Sink) Result(ctx context.Context) (Transfer, error) {
	var t Transfer
	if err := s.Proc.Wait(ctx); err != nil {
		return t, fmt.Errorf("sink %s: %w: %s", s.Proc.Name, err, tail(s.Proc.Log(), 2000))
	}
	err := decodeLastLine([]byte(s.Proc.Output()), &t, "sink "+s.Proc.Name)
	return t, err
}

// Send sends size bytes of seeded pseudo-random data from h to to and
// returns what the sender hashed.
func (h *Host) Send(ctx context.Context, to netip.AddrPort, size int64, seed uint64, opts DialOptions) (Transfer, error) {
	var t Transfer
	args := append([]string{"-connect", to.String(), "-bytes", strconv.FormatInt(size, 10),
		"-seed", strconv.FormatUint(seed, 10)}, opts.args()...)
	err := h.runHelperJSON(ctx, &t, "source", args...)
	return t, err
}

// StartEcho runs a TCP echo server on listen inside h until the lab closes.
func (h *Host) StartEcho(ctx context.Context, label string, listen netip.AddrPort) (*Process, error) {
	return h.startHelper(ctx, label, "echo", true, "-listen", listen.String())
}

// Dial connects once from h to to (with echo, checks a line comes back)
// and reports the outcome; failing to connect is a result, not an error.
func (h *Host) Dial(ctx context.Context, to netip.AddrPort, echo bool, opts DialOptions) (DialResult, error) {
	var r DialResult
	args := append([]string{"-connect", to.String(), "-echo=" + strconv.FormatBool(echo)}, opts.args()...)
	err := h.runHelperJSON(ctx, &r, "dial", args...)
	return r, err
}

// Hold is a long-lived echo conversation started by StartHold.
type Hold struct{ Proc *Process }

// StartHold keeps one TCP connection from h to an echo server at to and
// round-trips a message every interval.
func (h *Host) StartHold(ctx context.Context, label string, to netip.AddrPort, interval time.Duration, opts DialOptions) (*Hold, error) {
	args := append([]string{"-connect", to.String(), "-interval", interval.String()}, opts.args()...)
	p, err := h.startHelper(ctx, label, "hold", true, args...)
	if err != nil {
		return nil, err
	}
	return &Hold{Proc: p}, nil
}

// Rounds returns how many round trips succeeded so far and the failure
// line, if the conversation broke.
func (hd *Hold) Rounds() (ok int, failure string) {
	for line := range strings.SplitSeq(hd.Proc.Output(), "\n") {
		switch {
		case strings.HasPrefix(line, "ok "):
			ok++
		case strings.HasPrefix(line, "fail "):
			failure = line
		}
	}
	return ok, failure
}

// WaitRounds waits until at least n more rounds than now succeeded.
func (hd *Hold) WaitRounds(ctx context.Context, n int) error {
	start, _ := hd.Rounds()
	for {
		ok, failure := hd.Rounds()
		if failure != "" {
			return fmt.Errorf("%s broke: %s", hd.Proc.Name, failure)
		}
		if ok >= start+n {
			return nil
		}
		if !hd.Proc.Alive() {
			return fmt.Errorf("%s exited after %d rounds: %s", hd.Proc.Name, ok, tail(hd.Proc.Log(), 1000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %d rounds, waiting for %d: %w", hd.Proc.Name, ok, start+n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SendUDP sends count datagrams from h to to and reports whether the
// kernel let them out (Error holds the first send error).
func (h *Host) SendUDP(ctx context.Context, to netip.AddrPort, count int) (UDPSendResult, error) {
	var r UDPSendResult
	err := h.runHelperJSON(ctx, &r, "udpsend", "-to", to.String(), "-count", strconv.Itoa(count))
	return r, err
}

// FloodUDP sends garbage at to from h: at most packets datagrams, for at
// most duration.
func (h *Host) FloodUDP(ctx context.Context, to netip.AddrPort, packets int, duration time.Duration, seed uint64) (FloodResult, error) {
	var r FloodResult
	err := h.runHelperJSON(ctx, &r, "udpflood", "-to", to.String(), "-packets", strconv.Itoa(packets),
		"-duration", duration.String(), "-seed", strconv.FormatUint(seed, 10))
	return r, err
}

// StartUDPEcho runs a UDP "what is my address" server on listen inside h.
func (h *Host) StartUDPEcho(ctx context.Context, label string, listen netip.AddrPort) (*Process, error) {
	return h.startHelper(ctx, label, "udpecho", true, "-listen", listen.String())
}

// ProbeUDP sends from one socket in h to each udpecho server in targets and
// returns how each saw the socket. It fails if a target does not answer
// within timeout (zero: 5 s).
func (h *Host) ProbeUDP(ctx context.Context, targets []netip.AddrPort, timeout time.Duration) (ProbeResult, error) {
	var r ProbeResult
	list := make([]string, len(targets))
	for i, t := range targets {
		list[i] = t.String()
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	err := h.runHelperJSON(ctx, &r, "udpprobe", "-targets", strings.Join(list, ","), "-timeout", timeout.String())
	return r, err
}
