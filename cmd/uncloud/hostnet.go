package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/agent/hostnet"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/tun"
)

// hostNetFlags are the host networking settings that init, join, agent
// and install accept. They are kept in the data dir (hostnet.json), so an
// agent started later without them keeps them.
type hostNetFlags struct {
	Expose    []string `help:"Forward inbound mesh connections on PORT[/udp] to this host's 127.0.0.1:PORT (netstack mode, and TCP in rootless mode; in kernel mode the mesh reaches the host's ports through the interface). Repeatable. Added to the ports already kept; 'uncloud expose rm' takes one away." placeholder:"PORT[/udp]"`
	SOCKS5    string   `name:"socks5" help:"Serve SOCKS5 into the mesh on this address, so host programs reach mesh addresses and *.internal names. PORT alone is 127.0.0.1:PORT; another IP only when you give it. Replaces the kept address; 'off' turns it off." placeholder:"[IP:]PORT|off"`
	HTTPProxy string   `name:"http-proxy" help:"Serve an HTTP proxy into the mesh (CONNECT and http:// URLs) on this address, for programs that do not speak SOCKS. PORT alone is 127.0.0.1:PORT. Replaces the kept address; 'off' turns it off." placeholder:"[IP:]PORT|off"`
}

// hostNetHelp explains the flags' lasting effect, for the commands'
// long help.
const hostNetHelp = `Host networking (--expose, --socks5, --http-proxy) is kept in the data dir (hostnet.json) and survives restarts: an agent started without these flags keeps what is stored. Given at a start, --expose adds ports to the stored list and --socks5/--http-proxy replace the stored address ('off' removes it). At runtime 'uncloud expose add|rm|ls' and 'uncloud proxy set|ls' change them without a restart. The proxies reach only the mesh (10.210.0.0/16 and *.internal names, resolved by the agent's own DNS) and listen on loopback unless you name another address.`

// change parses the flags into a settings change.
func (f hostNetFlags) change() (hostnet.Change, error) {
	var c hostnet.Change
	for _, s := range f.Expose {
		p, err := tun.ParseExposedPort(s)
		if err != nil {
			return c, fmt.Errorf("--expose: %w", err)
		}
		c.AddExpose = append(c.AddExpose, p)
	}
	var err error
	if c.SOCKS5, err = hostnet.ParseListenFlag("--socks5", f.SOCKS5); err != nil {
		return c, err
	}
	if c.HTTPProxy, err = hostnet.ParseListenFlag("--http-proxy", f.HTTPProxy); err != nil {
		return c, err
	}
	// Refuse a bad combination before anything is created.
	if _, err := (hostnet.Settings{}).Apply(c, agent.ReservedPorts()); err != nil {
		return c, err
	}
	return c, nil
}

// saveHostNet applies a change of the flags to the settings in dataDir,
// for commands that start an agent afterwards.
func saveHostNet(dataDir string, c hostnet.Change) error {
	if c.Empty() {
		return nil
	}
	if _, err := hostnet.Update(dataDir, c, agent.ReservedPorts()); err != nil {
		return fmt.Errorf("host networking settings: %w", err)
	}
	return nil
}

// printHostNet says what the host gets of the mesh, in one line or two;
// nothing when nothing is set.
func printHostNet(h *api.HostNet) {
	if h == nil || (len(h.Exposed) == 0 && h.SOCKS5 == nil && h.HTTPProxy == nil) {
		return
	}
	fmt.Println(hostNetLine(*h))
}

func hostNetLine(h api.HostNet) string {
	exposed := "none"
	if len(h.Exposed) > 0 {
		exposed = strings.Join(h.Exposed, ", ")
		if !h.Forwarding {
			exposed += " (kept, not forwarded in " + h.Mode + " mode)"
		}
	}
	return fmt.Sprintf("exposed to the mesh: %s; SOCKS5 %s; HTTP proxy %s", exposed, proxyText(h.SOCKS5), proxyText(h.HTTPProxy))
}

func proxyText(p *api.ProxyStatus) string {
	switch {
	case p == nil:
		return "off"
	case p.Serving:
		return "on " + p.Listen
	case p.Error != "":
		return p.Listen + " NOT SERVING: " + p.Error
	}
	return p.Listen + " (not serving)"
}

type exposeCmd struct {
	Add exposeAddCmd `cmd:"" help:"Forward inbound mesh connections on these ports to this host's 127.0.0.1, at once: 'uncloud expose add 8080 53/udp'."`
	Rm  exposeRmCmd  `cmd:"" help:"Stop forwarding these ports, at once; connections already forwarded to them are closed: 'uncloud expose rm 8080'."`
	Ls  exposeLsCmd  `cmd:"" help:"List the ports this machine forwards from the mesh."`
}

func (exposeCmd) Help() string {
	return `A netstack machine (no TUN device, or --userspace) keeps the mesh inside the agent, so nothing on the host is reachable from the mesh unless exposed: the agent forwards inbound mesh connections (TCP, and UDP flows) on an exposed port to 127.0.0.1 of that port, and refuses every other port. Changes take effect at once, are kept in the data dir, and other machines see the list in 'uncloud machine ls'. A kernel-mode machine refuses them: the mesh reaches its ports through the interface, as the host's firewall allows.

Examples:
  uncloud expose add 8080            # a web app on 127.0.0.1:8080, reachable as <machine>.machine.internal:8080
  uncloud expose add 22 53/udp       # several at once
  uncloud expose rm 8080             # closed at once, open connections included
  uncloud expose ls -o json`
}

type exposePortsArgs struct {
	Ports []string `arg:"" help:"PORT or PORT/udp (PORT/tcp is the default)." placeholder:"PORT[/udp]"`
}

type exposeAddCmd struct{ exposePortsArgs }
type exposeRmCmd struct{ exposePortsArgs }

func (c exposeAddCmd) Run(g *globals) error {
	return updateHostNet(g, api.HostNetUpdate{AddExpose: c.Ports}, "")
}

func (c exposeRmCmd) Run(g *globals) error {
	return updateHostNet(g, api.HostNetUpdate{RemoveExpose: c.Ports}, "")
}

// updateHostNet sends a change and prints the result in output's form.
func updateHostNet(g *globals, u api.HostNetUpdate, output string) error {
	return agentShow(g, shortCommand, output, func(ctx context.Context, a *api.Client) (api.HostNet, error) {
		return a.UpdateHostNet(ctx, u)
	}, func(h api.HostNet) error {
		fmt.Println(strings.ToUpper(hostNetLine(h)[:1]) + hostNetLine(h)[1:] + ".")
		return nil
	})
}

type exposeLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c exposeLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) (api.HostNet, error) {
		return a.HostNet(ctx)
	}, renderExposed)
}

// renderExposed shows the exposed ports and where they go.
func renderExposed(h api.HostNet) error {
	if len(h.Exposed) == 0 {
		fmt.Printf("No ports exposed (%s mode).\n", h.Mode)
		return nil
	}
	if !h.Forwarding {
		fmt.Printf("Kept, but not forwarded: this machine runs in %s mode, where the mesh reaches its ports through the interface.\n", h.Mode)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PORT\tFORWARDED TO")
	for _, p := range h.Exposed {
		port, _, _ := strings.Cut(p, "/")
		fmt.Fprintf(w, "%s\t127.0.0.1:%s\n", p, port)
	}
	return w.Flush()
}

type proxyCmd struct {
	Set proxySetCmd `cmd:"" help:"Start, move or stop the SOCKS5 and HTTP proxies into the mesh, at once."`
	Ls  proxyLsCmd  `cmd:"" help:"Show where the proxies into the mesh listen and whether they serve."`
}

func (proxyCmd) Help() string {
	return `Host programs reach the mesh through the agent's proxies: SOCKS5 (curl --socks5-hostname, ssh -o ProxyCommand, browsers) and an HTTP proxy (CONNECT for any TCP, e.g. https; absolute http:// URLs forwarded; HTTP_PROXY for tools that know no SOCKS). Both reach mesh addresses (10.210.0.0/16) and *.internal names, which the agent resolves in its own zone, and refuse anything else (the HTTP proxy with 403 and the reason). Needed on netstack machines, whose mesh has no kernel interface; offered on every kind. They have no authentication, so they listen on loopback unless you name another address.

Examples:
  uncloud proxy set --socks5 1080 --http-proxy 3128     # 127.0.0.1:1080 and 127.0.0.1:3128
  curl --socks5-hostname 127.0.0.1:1080 http://web.internal:8080/
  curl -x http://127.0.0.1:3128 http://m2.machine.internal:8080/
  uncloud proxy set --http-proxy off`
}

type proxySetCmd struct {
	SOCKS5    string `name:"socks5" help:"SOCKS5 address: PORT (127.0.0.1:PORT), IP:PORT, or off." placeholder:"[IP:]PORT|off"`
	HTTPProxy string `name:"http-proxy" help:"HTTP proxy address: PORT (127.0.0.1:PORT), IP:PORT, or off." placeholder:"[IP:]PORT|off"`
	Output    string `short:"o" enum:"text,json" default:"text" help:"text or json."`
}

func (c proxySetCmd) Run(g *globals) error {
	var u api.HostNetUpdate
	if c.SOCKS5 != "" {
		u.SOCKS5 = &c.SOCKS5
	}
	if c.HTTPProxy != "" {
		u.HTTPProxy = &c.HTTPProxy
	}
	if u.SOCKS5 == nil && u.HTTPProxy == nil {
		return fmt.Errorf("nothing to set: give --socks5 and/or --http-proxy (an address, or off)")
	}
	return updateHostNet(g, u, c.Output)
}

type proxyLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c proxyLsCmd) Run(g *globals) error {
	h, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.HostNet, error) {
		return a.HostNet(ctx)
	})
	if err != nil {
		return err
	}
	if c.Output == "json" {
		return printJSON(struct {
			SOCKS5    *api.ProxyStatus `json:"socks5"`
			HTTPProxy *api.ProxyStatus `json:"http_proxy"`
		}{h.SOCKS5, h.HTTPProxy})
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROXY\tLISTEN\tSTATE")
	for _, p := range []struct {
		name string
		s    *api.ProxyStatus
	}{{"socks5", h.SOCKS5}, {"http", h.HTTPProxy}} {
		switch {
		case p.s == nil:
			fmt.Fprintf(w, "%s\t-\toff\n", p.name)
		case p.s.Serving:
			fmt.Fprintf(w, "%s\t%s\tserving\n", p.name, p.s.Listen)
		default:
			fmt.Fprintf(w, "%s\t%s\tnot serving: %s\n", p.name, p.s.Listen, p.s.Error)
		}
	}
	return w.Flush()
}

func (exposeAddCmd) Help() string {
	return `Examples:
  uncloud expose add 8080          # TCP: the mesh reaches 127.0.0.1:8080 as <machine>.machine.internal:8080
  uncloud expose add 53/udp 8443   # a UDP port and a TCP port`
}

func (exposeRmCmd) Help() string {
	return `Examples:
  uncloud expose rm 8080           # refused from now on; open connections to it are closed
  uncloud expose rm 53/udp`
}

func (exposeLsCmd) Help() string {
	return `Examples:
  uncloud expose ls
  uncloud expose ls -o json        # {"mode":"netstack","exposed":["8080/tcp"],"forwarding":true,…}
  uncloud machine ls               # the EXPOSED column: every netstack machine's ports`
}

func (proxySetCmd) Help() string {
	return `Examples:
  uncloud proxy set --socks5 1080                 # SOCKS5 on 127.0.0.1:1080
  uncloud proxy set --http-proxy 3128             # HTTP proxy on 127.0.0.1:3128
  uncloud proxy set --http-proxy 0.0.0.0:3128     # on every interface: anyone who reaches it reaches the mesh
  uncloud proxy set --socks5 off --http-proxy off`
}

func (proxyLsCmd) Help() string {
	return `Examples:
  uncloud proxy ls
  uncloud proxy ls -o json
  uncloud status                  # the same on its "exposed to the mesh" line`
}
