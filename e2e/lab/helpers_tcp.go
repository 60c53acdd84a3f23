package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// Transfer is what each end of a TCP transfer saw.
type Transfer struct {
	Bytes   int64   `json:"bytes"`
	SHA256  string  `json:"sha256"`
	Seconds float64 `json:"seconds"`
	Peer    string  `json:"peer,omitempty"` // remote address as the sink saw it
}

// Mbps is the transfer's throughput in Mbit/s.
func (t Transfer) Mbps() float64 {
	if t.Seconds <= 0 {
		return 0
	}
	return float64(t.Bytes) * 8 / t.Seconds / 1e6
}

// helperSink accepts one TCP connection, reads it to EOF and reports size
// and sha256 of what arrived.
func helperSink(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("sink")
	listen := fs.String("listen", "", "address:port to listen on")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	defer ln.Close()
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Fprintf(stdout, "ready %s\n", ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept on %s: %w", *listen, err)
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	start := time.Now()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("read from %s after %d bytes: %w", c.RemoteAddr(), n, err)
	}
	return writeJSON(stdout, Transfer{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil)),
		Seconds: time.Since(start).Seconds(), Peer: c.RemoteAddr().String()})
}

// helperSource connects and sends -bytes of seeded pseudo-random data.
func helperSource(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("source")
	connect := fs.String("connect", "", "address:port to send to")
	proxy := fs.String("socks5", "", "SOCKS5 proxy address:port (optional)")
	size := fs.Int64("bytes", 1<<20, "how much to send")
	seed := fs.Uint64("seed", 1, "data seed")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	target, proxyAddr, err := parseTargets(*connect, *proxy)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	c, err := dialTCP(ctx, target, proxyAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	var key [32]byte
	key[0] = byte(*seed)
	key[1] = byte(*seed >> 8)
	data := rand.NewChaCha8(key)
	h := sha256.New()
	start := time.Now()
	n, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(data, *size))
	if err != nil {
		return fmt.Errorf("send to %s after %d bytes: %w", target, n, err)
	}
	// Half-close and wait for the sink to close: the transfer counts as done
	// when the far end has everything, not when our kernel buffer took it.
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			return fmt.Errorf("close write to %s: %w", target, err)
		}
		_, _ = io.Copy(io.Discard, c)
	}
	return writeJSON(stdout, Transfer{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil)), Seconds: time.Since(start).Seconds()})
}

// helperEcho serves TCP echo on -listen until stopped.
func helperEcho(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("echo")
	listen := fs.String("listen", "", "address:port to listen on")
	timeout := fs.Duration("timeout", time.Hour, "stop after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Fprintf(stdout, "ready %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", *listen, err)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// DialResult is what a dial helper reports.
type DialResult struct {
	Connected bool    `json:"connected"`
	Echoed    bool    `json:"echoed"`
	Seconds   float64 `json:"seconds"`
	Error     string  `json:"error,omitempty"`
	Refused   bool    `json:"refused,omitempty"` // the target (or proxy on its behalf) refused
	SOCKSCode int     `json:"socks_code,omitempty"`
}

// helperDial connects once (optionally through SOCKS5) and, with -echo,
// checks that a line comes back. It always exits 0 and reports the outcome,
// because "refused" is an expected answer in some tests.
func helperDial(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("dial")
	connect := fs.String("connect", "", "address:port")
	proxy := fs.String("socks5", "", "SOCKS5 proxy address:port (optional)")
	echo := fs.Bool("echo", false, "expect an echo server")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	target, proxyAddr, err := parseTargets(*connect, *proxy)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	res := DialResult{}
	c, err := dialTCP(ctx, target, proxyAddr)
	if err != nil {
		res.Error = err.Error()
		res.Refused = isRefused(err)
		res.SOCKSCode = socksCode(err)
		res.Seconds = time.Since(start).Seconds()
		return writeJSON(stdout, res)
	}
	defer c.Close()
	res.Connected = true
	if *echo {
		if err := echoOnce(ctx, c, "hello "+target.String()); err != nil {
			res.Error = err.Error()
			res.Refused = isRefused(err) || errors.Is(err, io.EOF)
		} else {
			res.Echoed = true
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return writeJSON(stdout, res)
}

func echoOnce(ctx context.Context, c net.Conn, msg string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if line != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", line, msg)
	}
	return nil
}

// helperHold keeps one connection to an echo server and round-trips a
// message every -interval, printing "ok N" or "fail N <error>" per round. It
// shows whether an established flow survives a change elsewhere.
func helperHold(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("hold")
	connect := fs.String("connect", "", "address:port of an echo server")
	proxy := fs.String("socks5", "", "SOCKS5 proxy address:port (optional)")
	interval := fs.Duration("interval", 200*time.Millisecond, "between rounds")
	timeout := fs.Duration("timeout", 5*time.Minute, "stop after")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	target, proxyAddr, err := parseTargets(*connect, *proxy)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	c, err := dialTCP(ctx, target, proxyAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stdout, "ready %s\n", c.LocalAddr())
	r := bufio.NewReader(c)
	for i := 1; ctx.Err() == nil; i++ {
		msg := fmt.Sprintf("round %d", i)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := fmt.Fprintf(c, "%s\n", msg)
		var line string
		if err == nil {
			line, err = r.ReadString('\n')
		}
		if err == nil && line != msg+"\n" {
			err = fmt.Errorf("echo %q, want %q", line, msg)
		}
		if err != nil {
			fmt.Fprintf(stdout, "fail %d %v\n", i, err)
			return fmt.Errorf("round %d: %w", i, err)
		}
		fmt.Fprintf(stdout, "ok %d\n", i)
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
	return nil
}

func parseTargets(connect, proxy string) (target, proxyAddr netip.AddrPort, err error) {
	target, err = netip.ParseAddrPort(connect)
	if err != nil {
		return target, proxyAddr, fmt.Errorf("-connect %q: %w", connect, err)
	}
	if proxy != "" {
		proxyAddr, err = netip.ParseAddrPort(proxy)
		if err != nil {
			return target, proxyAddr, fmt.Errorf("-socks5 %q: %w", proxy, err)
		}
	}
	return target, proxyAddr, nil
}
