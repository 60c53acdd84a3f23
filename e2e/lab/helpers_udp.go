package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"
)

// UDPSendResult is what the udpsend helper reports.
type UDPSendResult struct {
	Sent  int    `json:"sent"`
	Error string `json:"error,omitempty"` // the first send error, e.g. "no route to host"
}

// helperUDPSend sends -count datagrams to -to and reports whether the
// kernel accepted them: the fail-closed test wants the send itself to fail.
func helperUDPSend(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("udpsend")
	to := fs.String("to", "", "address:port")
	count := fs.Int("count", 3, "datagrams")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dst, err := netip.ParseAddrPort(*to)
	if err != nil {
		return fmt.Errorf("-to %q: %w", *to, err)
	}
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	defer conn.Close()
	res := UDPSendResult{}
	for i := 0; i < *count && ctx.Err() == nil; i++ {
		if _, err := conn.WriteToUDPAddrPort([]byte("uncloud lab probe"), dst); err != nil {
			if res.Error == "" {
				res.Error = err.Error()
			}
			continue
		}
		res.Sent++
		time.Sleep(10 * time.Millisecond)
	}
	return writeJSON(stdout, res)
}

// FloodResult is what the udpflood helper reports.
type FloodResult struct {
	Sent    int     `json:"sent"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
}

// helperUDPFlood sends garbage at a WireGuard port, bounded by -packets and
// -duration: random bytes of random length, and WireGuard-looking messages
// (types 1 to 4 with zero reserved bytes, the right or a truncated length,
// random content) that get past a naive type check. Sources rotate over
// several sockets so the receiver sees many endpoints.
func helperUDPFlood(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("udpflood")
	to := fs.String("to", "", "address:port")
	packets := fs.Int("packets", 200000, "at most this many datagrams")
	duration := fs.Duration("duration", 5*time.Second, "at most this long")
	seed := fs.Uint64("seed", 1, "random seed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dst, err := netip.ParseAddrPort(*to)
	if err != nil {
		return fmt.Errorf("-to %q: %w", *to, err)
	}
	// The lab only ever floods its own underlay (a mistake in a test must not
	// aim a flood anywhere else, even from inside a namespace).
	if p := netip.MustParsePrefix("198.18.0.0/15"); !p.Contains(dst.Addr()) {
		return fmt.Errorf("-to %s: refusing to flood outside 198.18.0.0/15", dst)
	}
	const sockets = 8
	conns := make([]*net.UDPConn, 0, sockets)
	for range sockets {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return fmt.Errorf("udp socket: %w", err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	rng := rand.New(rand.NewPCG(*seed, 0x5eed))
	buf := make([]byte, 1500)
	res := FloodResult{}
	start := time.Now()
	deadline := start.Add(*duration)
	for i := 0; i < *packets; i++ {
		if i%256 == 0 && (time.Now().After(deadline) || ctx.Err() != nil) {
			break
		}
		n := garbage(rng, i, buf)
		if _, err := conns[i%sockets].WriteToUDPAddrPort(buf[:n], dst); err != nil {
			res.Errors++ // ENOBUFS and ICMP-triggered ECONNREFUSED are expected under load
			continue
		}
		res.Sent++
	}
	res.Seconds = time.Since(start).Seconds()
	return writeJSON(stdout, res)
}

// garbage fills buf with the i-th flood datagram and returns its length.
// Five kinds take turns, each aimed at a different early check:
//
//  0. random bytes of random length, including empty;
//  1. a WireGuard message of the right size for its type (initiation 148,
//     response 92, cookie reply 64, transport ≥ 32 in 16-byte steps) with
//     zero reserved bytes and random content: it passes the size check
//     and must be dropped by the MAC or key-index lookup;
//  2. the same, truncated to a random shorter length;
//  3. a STUN binding request (magic cookie 0x2112A442) with random
//     attributes: the shared socket hands these to the NAT layer's queue,
//     which must stay bounded;
//  4. a STUN header whose length field lies about the size.
func garbage(rng *rand.Rand, i int, buf []byte) int {
	sizes := [...]int{1: 148, 2: 92, 3: 64, 4: 32}
	var n, typ int
	kind := i % 5
	switch kind {
	case 0:
		n = rng.IntN(1400)
	case 1, 2:
		typ = 1 + rng.IntN(4)
		n = sizes[typ]
		if typ == 4 {
			n += 16 * rng.IntN(80)
		}
		if kind == 2 {
			n = rng.IntN(n)
		}
	case 3, 4:
		n = 20 + 4*rng.IntN(60)
	}
	for j := 0; j < n; j += 8 {
		binary.LittleEndian.PutUint64(buf[j:min(j+8, len(buf))], rng.Uint64())
	}
	switch {
	case (kind == 1 || kind == 2) && n >= 4:
		buf[0] = byte(typ)
		buf[1], buf[2], buf[3] = 0, 0, 0
	case kind == 3 || kind == 4:
		binary.BigEndian.PutUint16(buf[0:], 0x0001) // binding request
		length := uint16(n - 20)
		if kind == 4 {
			length = uint16(rng.IntN(65536))
		}
		binary.BigEndian.PutUint16(buf[2:], length)
		binary.BigEndian.PutUint32(buf[4:], 0x2112A442)
	}
	return n
}

// helperUDPEcho answers every datagram with the sender's address as the
// listener saw it (a tiny STUN), to observe NAT mappings.
func helperUDPEcho(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("udpecho")
	listen := fs.String("listen", "", "address:port")
	timeout := fs.Duration("timeout", time.Hour, "stop after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	la, err := netip.ParseAddrPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", *listen, err)
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(la))
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", la, err)
	}
	go func() { <-ctx.Done(); conn.Close() }()
	fmt.Fprintf(stdout, "ready %s\n", conn.LocalAddr())
	buf := make([]byte, 1500)
	for {
		_, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read udp: %w", err)
		}
		_, _ = conn.WriteToUDPAddrPort([]byte(netip.AddrPortFrom(from.Addr().Unmap(), from.Port()).String()), from)
	}
}

// ProbeResult maps each udpecho target to the address it saw us as.
type ProbeResult struct {
	Local    string            `json:"local"`
	Observed map[string]string `json:"observed"`
}

// helperUDPProbe sends from ONE socket to several udpecho servers and
// reports how each saw us: the same port everywhere means
// endpoint-independent mapping, different ports mean a symmetric NAT.
func helperUDPProbe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("udpprobe")
	targets := fs.String("targets", "", "comma-separated address:port list")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	res := ProbeResult{Local: conn.LocalAddr().String(), Observed: map[string]string{}}
	buf := make([]byte, 1500)
	for t := range strings.SplitSeq(*targets, ",") {
		dst, err := netip.ParseAddrPort(t)
		if err != nil {
			return fmt.Errorf("-targets entry %q: %w", t, err)
		}
		for res.Observed[dst.String()] == "" {
			if _, err := conn.WriteToUDPAddrPort([]byte("probe"), dst); err != nil {
				return fmt.Errorf("send to %s: %w", dst, err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if ctx.Err() != nil {
				return fmt.Errorf("no answer from %s: %w", dst, ctx.Err())
			}
			if err != nil {
				continue // lost or not yet listening: send again
			}
			res.Observed[netip.AddrPortFrom(from.Addr().Unmap(), from.Port()).String()] = string(buf[:n])
		}
	}
	return writeJSON(stdout, res)
}
