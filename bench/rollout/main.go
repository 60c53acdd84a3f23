// Command rollout measures uncloud's rolling updates and rollbacks on a
// lab of three machines (network namespaces), each with its own Docker
// Engine, against Docker Swarm on the same engines in the same run:
//
//   - a rolling update of a 6-replica service (start-first, one at a time,
//     health check every 1 s, monitor 2 s): command to done;
//   - a rollout whose health check fails at the first replacement, and
//     (uncloud) one that fails on the machine the rollout reaches last:
//     total, and from the failure to the previous version running again;
//   - requests that failed meanwhile, from a client (2 workers, one request
//     after another) that asks the service through uncloud's ingress, or
//     Swarm's routing mesh, from another machine all along (target 0).
//
// Run as root from the repository root (it builds the binaries):
//
//	go run ./bench/rollout [-replicas 6] [-no-swarm | -only-swarm]
//
// It prints a table and a one-line summary of ratios. Not run by CI.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/bench/internal/dockerlab"
)

func main() {
	replicas := flag.Int("replicas", 6, "replicas of the service")
	noSwarm := flag.Bool("no-swarm", false, "skip the Docker Swarm peer")
	onlySwarm := flag.Bool("only-swarm", false, "measure only the Docker Swarm peer")
	probeURL := flag.String("probe", "", "(internal) run the client against this URL")
	probeHost := flag.String("probe-host", "", "(internal) the client's Host header")
	flag.Parse()
	if *probeURL != "" {
		probe(*probeURL, *probeHost, 2)
		return
	}
	if err := run(*replicas, !*noSwarm, !*onlySwarm); err != nil {
		fmt.Fprintln(os.Stderr, "rollout:", err)
		os.Exit(1)
	}
}

type bench struct {
	*dockerlab.Lab
	self string // this binary, run as the client
	log  io.Writer
}

// startProbe starts the client on the second machine and waits for its
// first answers.
func (b *bench) startProbe(ctx context.Context, label, url, host string) (counter, error) {
	p, err := b.Hosts[1].Start(label, b.self, "-probe", url, "-probe-host", host)
	if err != nil {
		return counter{}, err
	}
	c := counter{p}
	if err := c.waitOK(ctx, 20, time.Minute); err != nil {
		_ = p.Stop(time.Second)
		return counter{}, err
	}
	return c, nil
}

func run(replicas int, withSwarm, withUncloud bool) error {
	ctx := context.Background()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	l, err := dockerlab.Start(ctx, 3, os.Stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	b := &bench{Lab: l, self: self, log: os.Stderr}
	client, err := l.Client(0)
	if err != nil {
		return err
	}
	defer client.Close()
	var phases []phase
	if withUncloud {
		if phases, err = b.measureUncloud(ctx, client, replicas); err != nil {
			return err
		}
	}
	var swarmErr error
	if withSwarm {
		var sp []phase
		sp, swarmErr = b.measureSwarm(ctx, replicas)
		phases = append(phases, sp...)
	}
	report(os.Stdout, phases, swarmErr)
	return nil
}

func report(out io.Writer, phases []phase, swarmErr error) {
	load, _ := os.ReadFile("/proc/loadavg")
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "peer\tchange\ttotal\trollback\trequests answered\tfailed\tnote")
	for _, p := range phases {
		rb := "-"
		if p.rollback > 0 {
			rb = p.rollback.Round(100 * time.Millisecond).String()
		}
		answered, failed := fmt.Sprint(p.answered), fmt.Sprint(p.failed)
		if p.answered < 0 {
			answered, failed = "n/a", "n/a"
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\t%s\n", p.peer, p.what, p.took.Round(100*time.Millisecond), rb, answered, failed, p.note)
	}
	w.Flush()
	if swarmErr != nil {
		fmt.Fprintf(out, "swarm: not measured: %v\n", swarmErr)
	}
	find := func(peer, prefix string) *phase {
		for i := range phases {
			if phases[i].peer == peer && strings.HasPrefix(phases[i].what, prefix) {
				return &phases[i]
			}
		}
		return nil
	}
	s := "summary:"
	for _, what := range []string{"rolling update", "failure at the 1st"} {
		u, sw := find("uncloud", what), find("swarm", what)
		if u == nil {
			continue
		}
		s += fmt.Sprintf(" %s uncloud %v", what, u.took.Round(100*time.Millisecond))
		if sw != nil {
			s += fmt.Sprintf(" / swarm %v = %.2f;", sw.took.Round(100*time.Millisecond), float64(u.took)/float64(sw.took))
		} else {
			s += ";"
		}
	}
	failed := map[string]int{}
	for _, p := range phases {
		if p.failed >= 0 {
			failed[p.peer] += p.failed
		}
	}
	s += fmt.Sprintf(" failed requests uncloud %d", failed["uncloud"])
	if _, ok := failed["swarm"]; ok {
		s += fmt.Sprintf(", swarm %d", failed["swarm"])
	}
	fmt.Fprintf(out, "%s (target 0); load average %s", s, load)
}
