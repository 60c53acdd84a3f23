// Command echoserver is the test workload of the runtime tests: a static
// HTTP server that answers with its host name, the address it was reached
// at and the address the request came from (so a test sees whether
// anything rewrote the source). "echoserver get URL" fetches a URL and
// prints the answer, which lets a test make one container call another
// (the image has nothing else in it). GET /bytes?n=N answers N
// pseudo-random bytes and "echoserver sum URL" fetches a URL whole and
// prints "bytes=N sha256=H", so a test can move a large body between two
// containers and check it (full-size segments, many of them).
// GET /file?path=P and /env?name=N answer a file's content (64 KiB at
// most) and an environment variable's value.
// "echoserver dial HOST:PORT" opens a TCP connection (2 s at most) and
// says "open" (exit 0) or why not (exit 1), for firewall tests.
// "echoserver sh" is a tiny shell for the exec tests (shell.go).
// "echoserver get-unless-in CIDR URL" is get, except that it fails
// (exit 1) in a container with an address in CIDR: a health check that
// fails on one machine only (each machine has its own subnet), for
// rollout tests.
// "echoserver spoof SRC DST PORT"
// sends one UDP datagram with a forged source address through a raw
// socket, to test that the host drops it.
// "echoserver lookup NAME" prints the IPv4 addresses NAME resolves to
// through the container's resolver, sorted, one a line.
//
// The server listens on $PORT (8080 by default), which may name several
// ports ("2222,3000"); any other arguments are ignored, so the image can
// stand in for a program run with its own command line (a Compose
// file's `command:`), as the Compose corpus e2e test has it do.
package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "get" {
		os.Exit(get(os.Args[2]))
	}
	if len(os.Args) == 4 && os.Args[1] == "get-unless-in" {
		os.Exit(getUnlessIn(os.Args[2], os.Args[3]))
	}
	if len(os.Args) == 3 && os.Args[1] == "sum" {
		os.Exit(sum(os.Args[2]))
	}
	if len(os.Args) == 3 && os.Args[1] == "dial" {
		os.Exit(dial(os.Args[2]))
	}
	if len(os.Args) == 2 && os.Args[1] == "sh" {
		os.Exit(shell())
	}
	if len(os.Args) == 5 && os.Args[1] == "spoof" {
		os.Exit(spoof(os.Args[2], os.Args[3], os.Args[4]))
	}
	if len(os.Args) == 3 && os.Args[1] == "lookup" {
		os.Exit(lookup(os.Args[2]))
	}
	ports := []string{"8080"}
	if p := os.Getenv("PORT"); p != "" {
		ports = strings.Split(p, ",")
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		remote, _, _ := net.SplitHostPort(r.RemoteAddr)
		localIP := ""
		if local != nil {
			localIP, _, _ = net.SplitHostPort(local.String())
		}
		fmt.Printf("request %s from %s\n", r.URL.Path, remote)
		fmt.Fprintf(w, "host=%s addr=%s remote=%s\n", host, localIP, remote)
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		body, err := fetch(r.Context(), r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(body)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > 1<<30 {
			http.Error(w, "n must be 0..1GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		// ChaCha8 with a zero seed: the client can recompute the hash.
		io.CopyN(w, rand.NewChaCha8([32]byte{}), n)
	})
	// GET /file?path=P answers the file's first 64 KiB and GET /env?name=N
	// the variable's value: secrets tests read what a container got.
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer f.Close()
		io.Copy(w, io.LimitReader(f, 64<<10))
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		if !ok {
			http.Error(w, "not set", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, v)
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("exiting on request")
		os.Exit(3)
	})
	// Every port is bound before the first line says so: a test that
	// waits for it may then connect to any of them.
	var ls []net.Listener
	for i, p := range ports {
		ports[i] = ":" + strings.TrimSpace(p)
		l, err := net.Listen("tcp", ports[i])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ls = append(ls, l)
	}
	errs := make(chan error, len(ls))
	for i, l := range ls {
		fmt.Printf("listening on %s as %s\n", ports[i], host)
		go func() { errs <- http.Serve(l, mux) }()
	}
	fmt.Fprintln(os.Stderr, <-errs)
	os.Exit(1)
}

// lookup prints the IPv4 addresses name resolves to, sorted.
func lookup(name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.Unmap().String())
	}
	slices.Sort(out)
	fmt.Println(strings.Join(out, "\n"))
	return 0
}

func fetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// sum downloads url whole (up to 2 minutes) and prints its size and hash.
func sum(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		fmt.Fprintf(os.Stderr, "%s: %s after %d bytes: %v\n", url, resp.Status, n, err)
		return 1
	}
	fmt.Printf("bytes=%d sha256=%x\n", n, h.Sum(nil))
	return 0
}

func get(url string) int {
	body, err := fetch(context.Background(), url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write(body)
	return 0
}

func getUnlessIn(cidr, url string) int {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: echoserver get-unless-in CIDR URL:", err)
		return 2
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && p.Contains(ip.Unmap()) {
				fmt.Fprintf(os.Stderr, "failing on purpose: %s is in %s\n", ip, p)
				return 1
			}
		}
	}
	return get(url)
}

// spoof sends a UDP datagram "spoofed" from src to dst:port, building the
// IPv4 header itself (IPPROTO_RAW implies IP_HDRINCL; the kernel fills in
// the header checksum and length).
func spoof(src, dst, port string) int {
	s, err1 := netip.ParseAddr(src)
	d, err2 := netip.ParseAddr(dst)
	var p uint16
	_, err3 := fmt.Sscan(port, &p)
	if err1 != nil || err2 != nil || err3 != nil || !s.Is4() || !d.Is4() {
		fmt.Fprintln(os.Stderr, "usage: echoserver spoof SRC DST PORT")
		return 2
	}
	payload := []byte("spoofed")
	pkt := make([]byte, 28+len(payload))
	pkt[0] = 0x45
	total := len(pkt)
	pkt[2], pkt[3] = byte(total>>8), byte(total)
	pkt[8] = 64
	pkt[9] = syscall.IPPROTO_UDP
	s4, d4 := s.As4(), d.As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	pkt[20], pkt[21] = 0x30, 0x39 // source port 12345
	pkt[22], pkt[23] = byte(p>>8), byte(p)
	ulen := 8 + len(payload)
	pkt[24], pkt[25] = byte(ulen>>8), byte(ulen)
	copy(pkt[28:], payload)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw socket:", err)
		return 1
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: d4}); err != nil {
		fmt.Fprintln(os.Stderr, "send:", err)
		return 1
	}
	fmt.Println("sent")
	return 0
}

func dial(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		fmt.Println("closed:", err)
		return 1
	}
	c.Close()
	fmt.Println("open")
	return 0
}
