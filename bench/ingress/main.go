// Command ingress benchmarks uncloud's ingress against Caddy (Debian's
// caddy, reverse_proxy) in front of the same tiny backend, in one run:
// wrk -t2 -c64 through each proxy over HTTP and over HTTPS (one local
// self-signed certificate for both), and the backend alone as the limit.
// It prints a Markdown table of requests per second and p99 latency, and
// a one-line summary of ratios.
//
// Everything runs on loopback as separate processes: the backend and the
// uncloud ingress are this program re-executed in another role, Caddy is
// the Debian binary with a generated Caddyfile. Run from the repository
// root:
//
//	go run ./bench/ingress [-duration 10s] [-repeat 1] [-connections 64]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration    time.Duration
	connections int
	threads     int
	repeat      int
	only        string
	profile     string
	accessLog   bool
	keep        bool
	baseline    string
}

func main() {
	role := flag.String("role", "", "internal: run as backend or ingress")
	port := flag.Int("port", 0, "internal: backend port")
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each wrk run")
	flag.IntVar(&o.connections, "connections", 64, "wrk connections")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.repeat, "repeat", 1, "rounds over all rows, interleaved; the table shows per-row medians")
	flag.StringVar(&o.only, "only", "", "comma-separated rows to run (default all): "+strings.Join(rowNames(), ","))
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of the uncloud ingress under HTTP load to this file")
	flag.BoolVar(&o.accessLog, "access-log", false, "run the uncloud ingress with its access log on (to /dev/null)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (Caddyfile, logs)")
	flag.StringVar(&o.baseline, "baseline", "", "also run this build of bench/ingress (e.g. of an earlier commit) as the baseline-http/https rows, to compare builds in one run")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch *role {
	case "backend":
		err = runBackend(ctx, *port)
	case "ingress":
		err = runIngress(ctx, log)
	case "":
		err = run(ctx, o)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/ingress:", err)
		os.Exit(1)
	}
}

func need(bins ...string) error {
	var missing []string
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: apt-get install -y --no-install-recommends %s", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	return nil
}
