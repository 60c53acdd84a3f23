// Command demo runs a two-machine uncloud mesh in network namespaces on
// this one box, for a newcomer to see and poke at: h1 in kernel TUN mode,
// h2 in userspace netstack mode, each on its own "internet" address. It
// shows both agents up, pings across the tunnel, prints what to try, and
// removes everything on Ctrl-C. It needs root. `sudo scripts/demo` builds
// and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

func main() {
	lab.HelperMain(nil) // the lab re-executes this binary for in-namespace helpers
	duration := flag.Duration("duration", 0, "exit after this long (0: wait for Ctrl-C)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, duration time.Duration) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root for network namespaces: sudo scripts/demo")
	}
	if os.Getenv(lab.EnvUncloudBin) == "" {
		dir, err := os.MkdirTemp("", "uncloud-demo-bin-")
		if err != nil {
			return fmt.Errorf("temp dir for the binary: %w", err)
		}
		defer os.RemoveAll(dir)
		fmt.Println("building uncloud …")
		bin, err := lab.BuildUncloud(ctx, dir)
		if err != nil {
			return err
		}
		os.Setenv(lab.EnvUncloudBin, bin)
	}

	l, err := lab.New(ctx, lab.Options{Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\ncleaning up: stopping agents, deleting namespaces …")
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
		}
	}()

	h1, err := l.AddHost(ctx, "h1", lab.HostOptions{})
	if err != nil {
		return err
	}
	h2, err := l.AddHost(ctx, "h2", lab.HostOptions{})
	if err != nil {
		return err
	}
	socks := netip.MustParseAddrPort("127.0.0.1:1080")
	agents, err := lab.StartMesh(ctx, []lab.Node{
		{Host: h1, Options: lab.AgentOptions{LogLevel: "info"}},
		{Host: h2, Options: lab.AgentOptions{LogLevel: "info", Userspace: true, Expose: []string{"8080"}, SOCKS5: socks}},
	})
	if err != nil {
		return err
	}
	for _, a := range agents {
		fmt.Printf("\n%s (namespace %s, internet address %v): agent up in %s mode, mesh address %v\n  %s\n",
			a.Host.Name, a.Host.NS, a.Host.Addr, a.Mode, a.MeshAddr(), meshUpLine(a.Proc.Log()))
	}
	a1, a2 := agents[0], agents[1]

	fmt.Printf("\nping %v (h2's netstack) from h1 through the tunnel:\n", a2.MeshAddr())
	res, err := h1.Ping(ctx, a2.MeshAddr(), 3, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("  %d/%d replies, rtt min %.2f ms avg %.2f ms\n", res.Received, res.Sent, res.MinRTTms, res.AvgRTTms)
	if res.Received == 0 {
		return fmt.Errorf("no reply across the tunnel; agent logs are in %s", l.Dir)
	}
	if _, err := h1.StartEcho(ctx, "echo", netip.AddrPortFrom(a1.MeshAddr(), 7)); err != nil {
		return err
	}
	d, err := h2.Dial(ctx, netip.AddrPortFrom(a1.MeshAddr(), 7), true, lab.DialOptions{SOCKS5: socks, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	fmt.Printf("TCP echo from h2 to %v:7 through its SOCKS5 proxy: echoed=%v (%.2f ms)\n", a1.MeshAddr(), d.Echoed, d.Seconds*1000)

	exe := func(h *lab.Host) string { return "ip netns exec " + h.NS }
	fmt.Printf(`
What to try, in another root shell:
  %[1]s ip addr show uncloud      # h1's WireGuard interface: %[3]v/32
  %[1]s ip route                  # the mesh route, and the fail-closed unreachable route
  %[1]s %[5]s
  tail -f %[6]s/h1/uncloud.log %[6]s/h2/uncloud.log

  h2 exposes port 8080 to the mesh (and nothing else):
  %[2]s python3 -m http.server 8080 --bind 127.0.0.1
  %[1]s curl http://%[4]v:8080/

  h2's programs reach the mesh through the agent's SOCKS5 proxy:
  %[1]s python3 -m http.server 8000 --bind %[3]v
  %[2]s curl --socks5 127.0.0.1:1080 http://%[3]v:8000/

  Edit %[6]s/h1/uncloud.conf, then: kill -HUP %[7]d   # h1 re-reads its peers
  kill -9 %[7]d; %[1]s ip route get %[4]v   # fails closed: unreachable, no leak
`, exe(h1), exe(h2), a1.MeshAddr(), a2.MeshAddr(), pingHint(a2.MeshAddr()), l.Dir, a1.Proc.Pid())

	if duration > 0 {
		fmt.Printf("\nexiting in %v\n", duration)
		select {
		case <-ctx.Done():
		case <-time.After(duration):
		}
		return nil
	}
	fmt.Println("\nPress Ctrl-C to stop and clean up.")
	<-ctx.Done()
	return nil
}

func pingHint(addr netip.Addr) string {
	if _, err := exec.LookPath("ping"); err != nil {
		return fmt.Sprintf("ping %v                 # (apt-get install iputils-ping)", addr)
	}
	return fmt.Sprintf("ping %v", addr)
}

func meshUpLine(log string) string {
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, "mesh up") {
			return line
		}
	}
	return "(no mesh up line)"
}
