// Command compose measures a 10-service Compose project (14 containers,
// health checks every second, depends_on service_healthy chains: see
// project.go) from the command to every container up (running, and
// healthy where it has a health check):
//
//   - `uncloud deploy -f FILE` on a lab of three machines (network
//     namespaces), each with its own Docker Engine, formed into one
//     network (bench/internal/dockerlab);
//   - the peer, in the same run: `docker-compose up -d` (or `docker
//     compose up -d` when the Docker CLI has the plugin) of the same file
//     against the first machine's engine alone.
//
// The rounds are interleaved, each peer first in every other round. Run
// as root from the repository root (it builds the binaries):
//
//	go run ./bench/compose [-rounds 3]
//	go run ./bench/compose -quick       # 1 round
//
// It prints a table and a one-line summary of ratios. Not run by CI.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/bench/internal/dockerlab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

func main() {
	rounds := flag.Int("rounds", 3, "interleaved rounds (medians reported)")
	quick := flag.Bool("quick", false, "1 round")
	flag.Parse()
	if *quick {
		*rounds = 1
	}
	if err := run(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "compose:", err)
		os.Exit(1)
	}
}

type bench struct {
	*dockerlab.Lab
	composeBin []string // docker-compose, or docker compose
}

// composeCommand is `docker compose` when the Docker CLI has the plugin,
// else Debian's `docker-compose`.
func composeCommand() ([]string, string, error) {
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err == nil {
		return []string{"docker", "compose"}, strings.TrimSpace(string(out)), nil
	}
	out, err := exec.Command("docker-compose", "version", "--short").CombinedOutput()
	if err != nil {
		return nil, "", fmt.Errorf("neither docker compose nor docker-compose: %w: %s", err, out)
	}
	return []string{"docker-compose"}, "docker-compose " + strings.TrimSpace(string(out)), nil
}

// sample is one peer's round: command returned, and all up.
type sample struct{ cmd, all time.Duration }

func run(rounds int) error {
	ctx := context.Background()
	bin, version, err := composeCommand()
	if err != nil {
		return err
	}
	loadStart, _ := os.ReadFile("/proc/loadavg")
	l, err := dockerlab.Start(ctx, 3, os.Stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	b := &bench{Lab: l, composeBin: bin}
	file := filepath.Join(l.Dir, "compose.yaml")
	if err := os.WriteFile(file, []byte(projectFile), 0o644); err != nil {
		return err
	}
	// Each engine imported the image on its own (another image ID): make
	// it m1's everywhere, as a user's push would.
	if out, err := b.Uncloud(ctx, 0, "image", "push", "--force", testimage.Tag); err != nil {
		return fmt.Errorf("image push: %w\n%s", err, out)
	}
	client, err := l.Client(0)
	if err != nil {
		return err
	}
	defer client.Close()
	var dock, unc []sample
	spreads := []string{}
	for r := 0; r < rounds; r++ {
		doCompose := func() error {
			fmt.Fprintf(os.Stderr, "round %d: %s up -d…\n", r+1, strings.Join(bin, " "))
			cmd, all, err := b.composeUp(ctx, file)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "  command %v, all up %v\n", cmd.Round(time.Millisecond), all.Round(time.Millisecond))
			dock = append(dock, sample{cmd, all})
			return nil
		}
		doUncloud := func() error {
			fmt.Fprintf(os.Stderr, "round %d: uncloud deploy…\n", r+1)
			cmd, all, spread, err := b.uncloudDeploy(ctx, client, file)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "  command %v, all up %v, containers per machine %v\n", cmd.Round(time.Millisecond), all.Round(time.Millisecond), spread)
			unc = append(unc, sample{cmd, all})
			spreads = append(spreads, fmtSpread(spread))
			return nil
		}
		steps := []func() error{doCompose, doUncloud}
		if r%2 == 1 {
			steps = []func() error{doUncloud, doCompose}
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("round %d: %w", r+1, err)
			}
		}
	}
	loadEnd, _ := os.ReadFile("/proc/loadavg")
	report(os.Stdout, version, rounds, dock, unc, spreads, strings.TrimSpace(string(loadStart)), strings.TrimSpace(string(loadEnd)))
	return nil
}

func fmtSpread(spread map[string]int) string {
	var ms []string
	for m := range spread {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s:%d", m, spread[m]))
	}
	return strings.Join(parts, " ")
}

func report(out io.Writer, version string, rounds int, dock, unc []sample, spreads []string, loadStart, loadEnd string) {
	checked := 0
	for _, s := range services {
		if s.health {
			checked++
		}
	}
	fmt.Fprintf(out, "project: %d services (%d with a 1 s health check), %d containers, depends_on service_healthy chains db→api→web; %d interleaved round(s), medians\n",
		len(services), checked, totalContainers(), rounds)
	fmt.Fprintf(out, "peer: %s, on one of the lab's engines; load average at start %s\n\n", version, loadStart)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "peer\tcommand returned\tall up (running + healthy)\tall up, each round\twhere")
	row := func(peer string, s []sample, where string) {
		var each []string
		for _, x := range s {
			each = append(each, x.all.Round(10*time.Millisecond).String())
		}
		fmt.Fprintf(w, "%s\t%v\t%v\t%s\t%s\n", peer, median(s, func(x sample) time.Duration { return x.cmd }).Round(10*time.Millisecond),
			median(s, func(x sample) time.Duration { return x.all }).Round(10*time.Millisecond), strings.Join(each, ", "), where)
	}
	row("docker compose up -d", dock, "1 machine")
	row("uncloud deploy", unc, "3 machines ("+strings.Join(spreads, "; ")+")")
	w.Flush()
	dm := median(dock, func(x sample) time.Duration { return x.all })
	um := median(unc, func(x sample) time.Duration { return x.all })
	dc := median(dock, func(x sample) time.Duration { return x.cmd })
	uc := median(unc, func(x sample) time.Duration { return x.cmd })
	fmt.Fprintf(out, "\nsummary: uncloud deploy / docker compose up = %.2f (all up %v / %v; command returned %.2f); load average at end %s\n",
		float64(um)/float64(dm), um.Round(10*time.Millisecond), dm.Round(10*time.Millisecond), float64(uc)/float64(dc), loadEnd)
}

// median of f over s (the upper one of an even count).
func median(s []sample, f func(sample) time.Duration) time.Duration {
	ds := make([]time.Duration, len(s))
	for i, x := range s {
		ds[i] = f(x)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}
