package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
)

type joinCmd struct {
	Token      string        `arg:"" help:"The token 'uncloud token' printed on a machine of the network, or - to read it from stdin (keeps it out of shell history and ps)."`
	Name       string        `help:"This machine's name (a DNS label); default: the host name." placeholder:"NAME"`
	PublicIP   netip.Addr    `name:"public-ip" help:"An address other machines can reach this one at." placeholder:"IP"`
	Port       uint16        `help:"WireGuard UDP port." default:"51820"`
	DataDir    string        `help:"Where keys and state are kept (0700)." default:"${datadir}" placeholder:"DIR"`
	Userspace  bool          `help:"Use the userspace netstack even where a kernel TUN would work; kept in the data dir, so later starts keep it (agent --kernel forgets it)."`
	Foreground bool          `help:"Run the agent in the foreground after joining."`
	Registry   registryFlags `embed:""`
	HostNet    hostNetFlags  `embed:""` // cmd/uncloud/hostnet.go
	Metrics    metricsFlags  `embed:""` // cmd/uncloud/metricsflags.go
}

func (joinCmd) Help() string {
	return `Joins the network a token names. The token's one-time key opens a WireGuard session with the machine that issued it (whose key the token pins, so nothing is trusted on first use); through it this machine sends its new public keys and receives a subnet, the gossip key and the member list. Nothing changes on either side if the token is malformed, expired, revoked or used up, or the name is taken.

` + hostNetHelp + `

Examples:
  uncloud join "$TOKEN" --name pi-1
  uncloud join - --userspace --expose 8080 --expose 53/udp --socks5 1080 --http-proxy 3128 < token.txt`
}

func (c joinCmd) Run(g *globals) error {
	if err := c.Metrics.check(); err != nil {
		return err
	}
	text := c.Token
	if text == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 16<<10))
		if err != nil {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		text = strings.TrimSpace(string(b))
	}
	hn, err := c.HostNet.change()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("Joining…")
	st, err := membership.Join(ctx, text, membership.JoinOptions{Name: c.Name, DataDir: c.DataDir, ListenPort: c.Port,
		PublicIP: c.PublicIP, Logger: g.Logger})
	if err != nil {
		return err
	}
	fmt.Printf("Joined network %s as %q, %s on the mesh.\n", st.NetworkID, st.Name, st.MeshAddress())
	if c.Userspace {
		hn.Userspace = ptr(true) // kept: a later start (install's unit, a reboot) stays in userspace
	}
	if err := saveHostNet(c.DataDir, hn); err != nil {
		return err
	}
	socket, err := startAgent(ctx, g, c.DataDir, c.Userspace, c.Foreground, c.Registry, c.Metrics)
	if err != nil || c.Foreground {
		return err
	}
	return waitForPeers(ctx, socket, 30*time.Second)
}

// waitForPeers reports progress until every peer has completed a
// handshake, which is when this machine can reach every machine it should.
func waitForPeers(ctx context.Context, socket string, timeout time.Duration) error {
	client, err := api.NewClient(socket, api.SSHOptions{})
	if err != nil {
		return err
	}
	defer client.Close()
	deadline := time.Now().Add(timeout)
	lastReport := ""
	for {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := client.Status(callCtx)
		cancel()
		if err == nil {
			var missing []string
			for _, p := range st.Peers {
				if p.LastHandshake.IsZero() {
					name := p.Machine
					if name == "" {
						name = strings.Join(p.AllowedIPs, ",")
					}
					missing = append(missing, name)
				}
			}
			reached := len(st.Peers) - len(missing)
			report := fmt.Sprintf("Reached %d of %d machines.", reached, len(st.Peers))
			if len(st.Peers) > 0 && len(missing) == 0 {
				fmt.Println(report + " This machine is part of the network.")
				return nil
			}
			if report != lastReport {
				fmt.Println(report)
				lastReport = report
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("after %v this machine still cannot reach %s; it keeps trying in the background ('uncloud status' shows progress)", timeout, strings.Join(missing, ", "))
			}
		} else if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}
