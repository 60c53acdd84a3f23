// Command mesh benchmarks uncloud's WireGuard data plane against the peers a
// user would pick instead: raw veth (the limit), Debian's wireguard-go, the
// current wireguard-go at the version uncloud embeds, Debian's nebula, and
// uncloud itself in kernel TUN and gVisor netstack modes.
//
// Every peer gets a fresh pair of network namespaces joined by a veth pair;
// no traffic leaves those namespaces. For each peer it measures idle RTT with
// ping and TCP throughput with iperf3 (one stream and four), then prints one
// Markdown table and a one-line summary of ratios.
//
// Run as root from the repository root:
//
//	go run ./bench/mesh [--duration 10s] [--only raw,wg-current,uncloud-tun]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings of one benchmark run.
type options struct {
	duration  time.Duration
	repeat    int
	only      []string
	pin       string
	pings     int
	pingEvery time.Duration
	uncloud   string // prebuilt uncloud binary; empty means build ./cmd/uncloud
	wgVersion string // golang.zx2c4.com/wireguard version; empty means go.mod's
	profile   string // directory for perf profiles; empty means none
	rttOnly   bool
	apt       bool
	keep      bool
}

func main() {
	var o options
	var only string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each iperf3 run")
	flag.IntVar(&o.repeat, "repeat", 1, "rounds over all peers, interleaved so drifting background load hits every peer alike; the table shows per-row medians")
	flag.StringVar(&only, "only", "", "comma-separated peers to run (default all): "+strings.Join(peerNames(), ","))
	flag.StringVar(&o.pin, "pin", "sides", "CPU pinning: sides (everything of namespace A, iperf3 client and its tunnel daemon, on CPU 0, of B on CPU 1: two one-core machines; steadiest), iperf (only client on CPU 0 and server on CPU 1), none")
	flag.IntVar(&o.pings, "pings", 20, "pings per RTT measurement")
	flag.DurationVar(&o.pingEvery, "ping-interval", 200*time.Millisecond, "interval between pings")
	flag.StringVar(&o.uncloud, "uncloud", "", "use this uncloud binary instead of building ./cmd/uncloud")
	flag.StringVar(&o.wgVersion, "wg-version", "", "golang.zx2c4.com/wireguard version for the wg-current peer (default: the one in go.mod)")
	flag.StringVar(&o.profile, "profile", "", "after measuring each row, run one extra 1-stream iperf3 under machine-wide perf and write where CPU time went to DIR/<row>.txt")
	flag.BoolVar(&o.rttOnly, "rtt-only", false, "measure only RTT (no iperf3); with --repeat, for more pings per peer")
	flag.BoolVar(&o.apt, "apt", false, "apt-get install missing Debian packages (iperf3, wireguard-go, wireguard-tools, nebula, ethtool)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (configs, daemon logs) for inspection")
	flag.Parse()
	if only != "" {
		o.only = strings.Split(only, ",")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	// Ctrl-C and SIGTERM cancel the context; deferred cleanup still runs
	// because run returns normally instead of the process dying.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/mesh:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: it creates network namespaces and TUN devices")
	}
	peers, err := selectPeers(o.only)
	if err != nil {
		return err
	}
	if o.duration < time.Second {
		return fmt.Errorf("--duration %s: want at least 1s", o.duration)
	}
	if o.repeat < 1 {
		return fmt.Errorf("--repeat %d: want at least 1", o.repeat)
	}
	pin, err := parsePinning(o.pin)
	if err != nil {
		return err
	}

	// Leftovers of an interrupted earlier run (namespaces, their processes,
	// temp dirs) would skew figures and collide with names, so go first.
	cleanupLeftovers(ctx, log)

	tmp, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", namePrefix, os.Getpid()))
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	if o.keep {
		log.Info("keeping temp dir", "dir", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	env := &environment{log: log, opts: o, tmp: tmp, pin: pin}
	if err := env.prepare(ctx, peers); err != nil {
		return err
	}
	printConditions(os.Stdout, env)

	var rounds [][]result
	for r := 0; r < o.repeat; r++ {
		var results []result
		for i, p := range peers {
			if ctx.Err() != nil {
				break
			}
			results = append(results, runPeer(ctx, env, r*len(peers)+i, p)...)
		}
		rounds = append(rounds, results)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	results := combineRounds(rounds)
	printTable(os.Stdout, results)
	printSummary(os.Stdout, results)
	return nil
}
