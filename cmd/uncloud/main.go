// Command uncloud turns a set of machines into one network that runs
// containers: a WireGuard mesh (embedded wireguard-go, kernel TUN or a
// userspace netstack), gossip, a replicated state, and an agent on every
// machine. This file is only the command line; the work is in the packages.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/alecthomas/kong"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
)

type cli struct {
	LogLevel   slog.Level `help:"Log level: debug, info, warn or error." default:"info" env:"UNCLOUD_LOG_LEVEL"`
	Connect    string     `help:"Agent to talk to: its socket path, unix:///path, or ssh://user@host[:port][/socket] for a machine reachable over SSH (~/.ssh/config applies). Wins over --context. Default: the current context, else ${socket}." env:"UNCLOUD_CONNECT" placeholder:"TARGET"`
	UseContext string     `name:"context" help:"Context to use for this command instead of the current one (see 'uncloud context')." env:"UNCLOUD_CONTEXT" placeholder:"NAME"`

	Init    initCmd    `cmd:"" help:"Create a network with this machine as its first member, and start the agent."`
	Token   tokenCmd   `cmd:"" help:"Issue, list and revoke join tokens."`
	Join    joinCmd    `cmd:"" help:"Join a network with a token from one of its machines, and start the agent."`
	Machine machineCmd `cmd:"" help:"Machines of the network."`
	Ingress ingressCmd `cmd:"" help:"The reverse proxy of machines with the ingress role."`
	Status  statusCmd  `cmd:"" help:"Show this machine and its WireGuard peers."`
	Mesh    meshCmd    `cmd:"" help:"Show how this machine reaches each peer: direct or relayed, endpoint, NAT type, handshake, RTT."`
	State   stateCmd   `cmd:"" help:"Inspect the replicated state (for operators)."`
	DNS     dnsCmd     `cmd:"" name:"dns" help:"What this machine's resolver answers for .internal names."`
	Expose  exposeCmd  `cmd:"" help:"Host ports this machine forwards from the mesh (netstack and rootless modes): add, rm, ls."`
	Proxy   proxyCmd   `cmd:"" help:"The SOCKS5 and HTTP proxies through which host programs reach the mesh: set, ls."`
	Agent   agentCmd   `cmd:"" help:"Run the agent in the foreground (systemd-friendly)."`
	Install installCmd `cmd:"" help:"Install and start a systemd service for the agent."`
	Keygen  keygenCmd  `cmd:"" help:"Print a new WireGuard key pair."`
	Pubkey  pubkeyCmd  `cmd:"" help:"Read a private key on stdin and print its public key."`
	Version versionCmd `cmd:"" help:"Print the version."`
	Context contextCmd `cmd:"" help:"Named lists of machines of a network to talk to: add, use, ls, rm."` // contexts.go

	Uninstall uninstallCmd `cmd:"" help:"Remove everything the agent added to this host; --purge also its data dir."`                           // uninstall.go
	Leave     leaveCmd     `cmd:"" help:"Take this machine out of its network: another member revokes it, then its agent and containers stop."` // leave.go

	UI uiCmd `cmd:"" name:"ui" help:"Open the web dashboard on this machine's loopback, over the CLI's connection to an agent."` // ui.go

	Completion completionCmd `cmd:"" help:"Print a bash, zsh or fish script that completes commands, flags, machines and services."` // completion.go

	AgentHostSide agentHostSideCmd `cmd:"" name:"agent-hostside" hidden:"" help:"(internal) A rootless agent's helper on the host's network."` // rootless_hostside.go

	containerCmds `embed:""` // run, ps, ls, … (containers.go)
}

// globals are what every command gets from the top-level flags.
type globals struct {
	Logger *slog.Logger
	// LogLevel is --log-level, passed on to the agent init and join
	// start in the background.
	LogLevel slog.Level
	// Connect is --connect, "" when not given; Context is --context.
	// client() (connect.go) picks the agent from them.
	Connect string
	Context string

	// Stderr gets the one-line notes of a context's fall-through (nil:
	// os.Stderr); contexts and probeTimeout replace the user's store
	// and probeTimeout in tests.
	Stderr       io.Writer
	contexts     *contextStore
	probeTimeout time.Duration
}

func main() {
	var c cli
	parser := newParser(&c)
	if completeIfAsked(parser, agentNames{}, os.Stdout) { // a shell's TAB (completion.go)
		return
	}
	kctx, err := parser.Parse(os.Args[1:])
	parser.FatalIfErrorf(err)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.LogLevel}))
	if err := kctx.Run(&globals{Logger: logger, LogLevel: c.LogLevel, Connect: c.Connect, Context: c.UseContext}); err != nil {
		fmt.Fprintf(os.Stderr, "uncloud: %v\n", err)
		os.Exit(1)
	}
}

// newParser is the CLI's kong parser over c (tests build the same one).
func newParser(c *cli) *kong.Kong {
	return kong.Must(c,
		kong.Name("uncloud"),
		kong.Description("Join any machines into one WireGuard mesh that runs containers, with no control plane."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"socket": api.DefaultSocket, "datadir": membership.DefaultDataDir},
	)
}
