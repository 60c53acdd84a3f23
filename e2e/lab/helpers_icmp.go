package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

// PingResult is what the ping helper reports.
type PingResult struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	MinRTTms float64 `json:"min_rtt_ms"`
	AvgRTTms float64 `json:"avg_rtt_ms"`
	Error    string  `json:"error,omitempty"` // e.g. a send that failed (no route)
}

// helperPing sends ICMP echo requests over a raw socket (the lab runs as
// root) and counts matching replies. It exists so the tests need no
// iputils-ping and get numbers rather than text to parse. It always exits 0:
// "no reply" is an answer some tests expect.
func helperPing(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("ping")
	addrFlag := fs.String("addr", "", "IPv4 address to ping")
	count := fs.Int("count", 3, "replies wanted")
	interval := fs.Duration("interval", 200*time.Millisecond, "between requests")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dst, err := netip.ParseAddr(*addrFlag)
	if err != nil || !dst.Is4() {
		return fmt.Errorf("-addr %q: want an IPv4 address", *addrFlag)
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()

	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("raw ICMP socket: %w", err)
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()

	id := uint16(os.Getpid())
	res := PingResult{}
	sentAt := map[uint16]time.Time{}
	replies := make(chan struct {
		seq uint16
		at  time.Time
	}, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				close(replies)
				return
			}
			// net.IPConn strips the IPv4 header: buf is the ICMP message.
			if n < 8 || buf[0] != 0 || binary.BigEndian.Uint16(buf[4:]) != id {
				continue
			}
			if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst.AsSlice()) {
				continue
			}
			replies <- struct {
				seq uint16
				at  time.Time
			}{binary.BigEndian.Uint16(buf[6:]), time.Now()}
		}
	}()

	var total time.Duration
	seen := map[uint16]bool{}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	send := func(seq uint16) {
		msg := echoRequest(id, seq)
		res.Sent++
		sentAt[seq] = time.Now()
		if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			res.Error = err.Error()
		}
	}
	seq := uint16(1)
	send(seq)
	for res.Received < *count {
		select {
		case r, ok := <-replies:
			if !ok {
				return writeJSON(stdout, res)
			}
			if t, sent := sentAt[r.seq]; sent && !seen[r.seq] {
				seen[r.seq] = true
				rtt := r.at.Sub(t)
				total += rtt
				if res.Received == 0 || rtt.Seconds()*1000 < res.MinRTTms {
					res.MinRTTms = rtt.Seconds() * 1000
				}
				res.Received++
				res.AvgRTTms = total.Seconds() * 1000 / float64(res.Received)
			}
		case <-tick.C:
			seq++
			send(seq)
		case <-ctx.Done():
			return writeJSON(stdout, res)
		}
	}
	return writeJSON(stdout, res)
}

// echoRequest builds an ICMP echo request with a 56-byte payload.
func echoRequest(id, seq uint16) []byte {
	msg := make([]byte, 8+56)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	for i := 8; i < len(msg); i++ {
		msg[i] = byte(i)
	}
	binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
	return msg
}

// inetChecksum is the RFC 1071 one's complement sum.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
