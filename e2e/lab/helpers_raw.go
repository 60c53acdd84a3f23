package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Raw helpers act as an attacker on the lab's wire: udpcapture copies one
// UDP datagram off a host's link (what a rogue relay, or anyone on the
// path, sees), udpspoof sends datagrams with any source address (a replay
// "from" someone else), and stunflood sends plain STUN binding requests,
// from the host's own sockets or from a spoofed address. All of them need
// root (raw and packet sockets) and refuse addresses outside the lab's
// internet and LANs (198.18.0.0/15).

var labUnderlay = netip.MustParsePrefix("198.18.0.0/15")

// Captured is one datagram udpcapture saw.
type Captured struct {
	From string `json:"from"` // ip:port
	To   string `json:"to"`
	Data string `json:"data"` // hex of the UDP payload
}

// Payload decodes Data.
func (c Captured) Payload() ([]byte, error) { return hex.DecodeString(c.Data) }

// CaptureUDP waits inside h for one UDP datagram, in either direction on
// any of its links, to or from port, whose payload starts with prefix and
// (when valid) whose source address is from.
func (h *Host) CaptureUDP(ctx context.Context, port uint16, prefix []byte, from netip.Addr, timeout time.Duration) (Captured, error) {
	var c Captured
	args := []string{"-port", strconv.Itoa(int(port)), "-prefix", hex.EncodeToString(prefix), "-timeout", timeout.String()}
	if from.IsValid() {
		args = append(args, "-src", from.String())
	}
	err := h.runHelperJSON(ctx, &c, "udpcapture", args...)
	return c, err
}

// StartCaptureUDP is CaptureUDP in the background: the capture is armed
// once it returns, and Result waits for it.
func (h *Host) StartCaptureUDP(ctx context.Context, label string, port uint16, prefix []byte, from netip.Addr, timeout time.Duration) (*Process, error) {
	args := []string{"-port", strconv.Itoa(int(port)), "-prefix", hex.EncodeToString(prefix), "-timeout", timeout.String()}
	if from.IsValid() {
		args = append(args, "-src", from.String())
	}
	return h.startHelper(ctx, label, "udpcapture", true, args...)
}

// CaptureResult waits for a capture started with StartCaptureUDP.
func CaptureResult(ctx context.Context, p *Process) (Captured, error) {
	var c Captured
	if err := p.Wait(ctx); err != nil {
		return c, fmt.Errorf("capture %s: %w: %s", p.Name, err, tail(p.Log(), 2000))
	}
	return c, decodeLastLine([]byte(p.Output()), &c, "capture "+p.Name)
}

// SendSpoofedUDP sends payload count times from inside h to `to`,
// with the source address from (anyone's).
func (h *Host) SendSpoofedUDP(ctx context.Context, from, to netip.AddrPort, payload []byte, count int) error {
	var res UDPSendResult
	if err := h.runHelperJSON(ctx, &res, "udpspoof", "-from", from.String(), "-to", to.String(),
		"-data", hex.EncodeToString(payload), "-count", strconv.Itoa(count)); err != nil {
		return err
	}
	if res.Sent != count {
		return fmt.Errorf("on %s: spoofed %d of %d datagrams: %s", h.Name, res.Sent, count, res.Error)
	}
	return nil
}

// StartSTUNFlood sends plain STUN binding requests from inside h to `to`
// at pps for duration, from spoof when valid (else from the host's own
// sockets, many ports). Result with FloodResultOf.
func (h *Host) StartSTUNFlood(ctx context.Context, label string, to, spoof netip.AddrPort, pps int, duration time.Duration) (*Process, error) {
	args := []string{"-to", to.String(), "-pps", strconv.Itoa(pps), "-duration", duration.String()}
	if spoof.IsValid() {
		args = append(args, "-spoof", spoof.String())
	}
	return h.startHelper(ctx, label, "stunflood", false, args...)
}

// FloodResultOf waits for a flood started in the background.
func FloodResultOf(ctx context.Context, p *Process) (FloodResult, error) {
	var r FloodResult
	if err := p.Wait(ctx); err != nil {
		return r, fmt.Errorf("flood %s: %w: %s", p.Name, err, tail(p.Log(), 2000))
	}
	return r, decodeLastLine([]byte(p.Output()), &r, "flood "+p.Name)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// helperUDPCapture: see CaptureUDP. It prints "ready" once its packet
// socket is open.
func helperUDPCapture(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("udpcapture")
	port := fs.Uint("port", 51820, "UDP port, source or destination")
	prefixHex := fs.String("prefix", "", "payload prefix, hex")
	src := fs.String("src", "", "source address (optional)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	prefix, err := hex.DecodeString(*prefixHex)
	if err != nil {
		return fmt.Errorf("-prefix %q: %w", *prefixHex, err)
	}
	var want netip.Addr
	if *src != "" {
		if want, err = netip.ParseAddr(*src); err != nil {
			return fmt.Errorf("-src %q: %w", *src, err)
		}
	}
	// ETH_P_ALL: a packet socket for one protocol sees only what arrives;
	// what the host sends reaches only the taps of every protocol.
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("packet socket timeout: %w", err)
	}
	fmt.Fprintln(stdout, "ready capture")
	deadline := time.Now().Add(*timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout: check the deadline
		}
		pkt := buf[:n]
		if len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[9] != syscall.IPPROTO_UDP || binary.BigEndian.Uint16(pkt[6:8])&0x3FFF != 0 {
			continue // not a whole IPv4 UDP datagram
		}
		ihl := int(pkt[0]&0x0F) * 4
		if len(pkt) < ihl+8 {
			continue
		}
		s := netip.AddrFrom4([4]byte(pkt[12:16]))
		d := netip.AddrFrom4([4]byte(pkt[16:20]))
		udp := pkt[ihl:]
		sport, dport := binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4])
		ulen := int(binary.BigEndian.Uint16(udp[4:6]))
		if ulen < 8 || ulen > len(udp) {
			continue
		}
		payload := udp[8:ulen]
		if (sport != uint16(*port) && dport != uint16(*port)) || !bytes.HasPrefix(payload, prefix) || (want.IsValid() && s != want) {
			continue
		}
		return writeJSON(stdout, Captured{From: netip.AddrPortFrom(s, sport).String(), To: netip.AddrPortFrom(d, dport).String(),
			Data: hex.EncodeToString(payload)})
	}
	return fmt.Errorf("no UDP datagram on port %d starting with %x (from %v) within %v", *port, prefix, want, *timeout)
}

// rawSender sends IPv4 UDP datagrams with any source address.
type rawSender struct{ fd int }

func newRawSender() (*rawSender, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	return &rawSender{fd: fd}, nil
}

func (r *rawSender) Close() { syscall.Close(r.fd) }

// send builds the IPv4 and UDP headers (UDP checksum 0: none, allowed over
// IPv4; the kernel fills in the IP checksum) around payload.
func (r *rawSender) send(buf []byte, from, to netip.AddrPort, payload []byte) error {
	total := 20 + 8 + len(payload)
	pkt := buf[:total]
	clear(pkt[:28])
	pkt[0], pkt[8], pkt[9] = 0x45, 64, syscall.IPPROTO_UDP
	binary.BigEndian.PutUint16(pkt[2:], uint16(total))
	f4, t4 := from.Addr().As4(), to.Addr().As4()
	copy(pkt[12:16], f4[:])
	copy(pkt[16:20], t4[:])
	binary.BigEndian.PutUint16(pkt[20:], from.Port())
	binary.BigEndian.PutUint16(pkt[22:], to.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	return syscall.Sendto(r.fd, pkt, 0, &syscall.SockaddrInet4{Addr: t4})
}

func labAddrPort(flag, s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("-%s %q: %w", flag, s, err)
	}
	if !labUnderlay.Contains(ap.Addr()) {
		return ap, fmt.Errorf("-%s %s: refusing an address outside %s", flag, ap, labUnderlay)
	}
	return ap, nil
}

// helperUDPSpoof: see SendSpoofedUDP.
func helperUDPSpoof(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("udpspoof")
	fromS := fs.String("from", "", "source address:port")
	toS := fs.String("to", "", "address:port")
	dataHex := fs.String("data", "", "payload, hex")
	count := fs.Int("count", 1, "datagrams")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	from, err := labAddrPort("from", *fromS)
	if err != nil {
		return err
	}
	to, err := labAddrPort("to", *toS)
	if err != nil {
		return err
	}
	payload, err := hex.DecodeString(*dataHex)
	if err != nil || len(payload) > 65000 {
		return fmt.Errorf("-data: not a datagram's hex (%d bytes): %v", len(payload), err)
	}
	r, err := newRawSender()
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, 65536)
	res := UDPSendResult{}
	for i := 0; i < *count && ctx.Err() == nil; i++ {
		if err := r.send(buf, from, to, payload); err != nil {
			if res.Error == "" {
				res.Error = err.Error()
			}
			continue
		}
		res.Sent++
	}
	return writeJSON(stdout, res)
}

// helperSTUNFlood: see StartSTUNFlood. Every request is a valid binding
// request with a fresh transaction ID, so it passes any parser and must be
// held back by rate, not by a decoding error.
func helperSTUNFlood(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("stunflood")
	toS := fs.String("to", "", "address:port")
	spoofS := fs.String("spoof", "", "source address:port to claim (optional)")
	pps := fs.Int("pps", 20000, "datagrams per second")
	duration := fs.Duration("duration", 5*time.Second, "how long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	to, err := labAddrPort("to", *toS)
	if err != nil {
		return err
	}
	var spoof netip.AddrPort
	var raw *rawSender
	var conns []*net.UDPConn
	if *spoofS != "" {
		if spoof, err = labAddrPort("spoof", *spoofS); err != nil {
			return err
		}
		if raw, err = newRawSender(); err != nil {
			return err
		}
		defer raw.Close()
	} else {
		for range 8 {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return fmt.Errorf("udp socket: %w", err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
	}
	// A binding request with no attributes: type 0x0001, length 0, the
	// magic cookie, a transaction ID (what RFC 5389 clients send first).
	req := make([]byte, 20)
	binary.BigEndian.PutUint16(req[0:], 0x0001)
	binary.BigEndian.PutUint32(req[4:], 0x2112A442)
	buf := make([]byte, 128)
	res := FloodResult{}
	start := time.Now()
	const batch = 100
	interval := time.Duration(float64(time.Second) * batch / float64(max(*pps, 1)))
	next := start
	for i := 0; time.Since(start) < *duration && ctx.Err() == nil; i++ {
		_, _ = rand.Read(req[8:20])
		var err error
		if raw != nil {
			err = raw.send(buf, spoof, to, req)
		} else {
			_, err = conns[i%len(conns)].WriteToUDPAddrPort(req, to)
		}
		if err != nil {
			res.Errors++
		} else {
			res.Sent++
		}
		if i%batch == batch-1 {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return writeJSON(stdout, res)
}
