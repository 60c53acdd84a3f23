// Command nat reports the NAT traversal and failure-detection figures of
// issues 5 and 18. It runs e2e tests with real agents in network
// namespaces behind real nftables NATs and prints the figures they log
// ("FIGURE …"):
//
//	flock /tmp/uncloud-e2e.lock sudo go run ./bench/nat [-runs 1] [-before main]
//
// TestNATTraversal is the NAT zoo (public p and q, a and b behind
// endpoint-independent NATs, c and d behind symmetric NATs, e public with
// unsolicited UDP dropped): path settle time after formation, NAT
// classification, hole punching, relaying, a cut direct path.
// TestFailureDetection cuts a machine off on the wire: how long until both
// sides see it unreachable, then after the heal until the state is
// identical and everyone alive. TestJoinOrder times five joins in quick
// succession, half of them behind NATs.
//
// With -before REF, the same tests also run with the uncloud binary built
// from that git ref (in a temporary worktree), interleaved with this
// tree's, so before and after are measured in one run on the same load.
// Times come from the tests' own clocks (they poll the agents' sockets,
// or `uncloud mesh` every 250 ms); the machine's load average is printed
// with the figures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	runs := flag.Int("runs", 1, "how many times to run the tests")
	before := flag.String("before", "", "also run the tests with the binary built from this git ref (e.g. main)")
	tests := flag.String("tests", "TestNATTraversal,TestFailureDetection,TestJoinOrder", "e2e tests to run, comma-separated")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/nat needs root (network namespaces, nftables): sudo go run ./bench/nat")
		os.Exit(2)
	}
	tmp, err := os.MkdirTemp("", "uncloud-bench-nat-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(tmp)
	type build struct{ name, bin string }
	var builds []build
	if *before != "" {
		bin, err := buildRef(*before, tmp)
		if err != nil {
			fail(err)
		}
		builds = append(builds, build{*before, bin})
	}
	after := filepath.Join(tmp, "uncloud-this")
	if out, err := exec.Command("go", "build", "-o", after, "./cmd/uncloud").CombinedOutput(); err != nil {
		fail(fmt.Errorf("build this tree: %v\n%s", err, out))
	}
	builds = append(builds, build{"this tree", after})

	figure := regexp.MustCompile(`FIGURE (.*)$`)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RUN\tBUILD\tTEST\tFIGURE")
	failed := 0
	var throughput, cut string                  // this tree's, for the summary
	slowestJoin := map[string][]time.Duration{} // per build: each TestJoinOrder run's slowest join
	joinFigure := regexp.MustCompile(`^five joins in quick succession: .*\(slowest ([0-9.]+m?s)\)`)
	for r := 1; r <= *runs; r++ {
		for _, test := range strings.Split(*tests, ",") {
			for _, b := range builds {
				load, _ := os.ReadFile("/proc/loadavg")
				fmt.Fprintf(os.Stderr, "run %d, %s, %s (load average %s)…\n", r, test, b.name, strings.Join(strings.Fields(string(load))[:3], " "))
				cmd := exec.Command("go", "test", "-count=1", "-run", "^"+test+"$", "-v", "-timeout", "15m", "./e2e/")
				cmd.Env = append(os.Environ(), "UNCLOUD_BIN="+b.bin)
				cmd.Stderr = os.Stderr
				out, err := cmd.StdoutPipe()
				if err != nil {
					fail(err)
				}
				if err := cmd.Start(); err != nil {
					fail(err)
				}
				sc := bufio.NewScanner(out)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					if m := figure.FindStringSubmatch(sc.Text()); m != nil {
						fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", r, b.name, test, m[1])
						if b.bin == after && strings.HasPrefix(m[1], "throughput") {
							throughput = m[1]
						}
						if b.bin == after && strings.HasPrefix(m[1], "a↔b direct path cut") {
							cut = m[1]
						}
						if j := joinFigure.FindStringSubmatch(m[1]); j != nil {
							if d, err := time.ParseDuration(j[1]); err == nil {
								slowestJoin[b.name] = append(slowestJoin[b.name], d)
							}
						}
					}
				}
				if err := cmd.Wait(); err != nil {
					failed++
					fmt.Fprintf(w, "%d\t%s\t%s\tFAILED: %v (figures above are partial)\n", r, b.name, test, err)
				}
			}
		}
		load, _ := os.ReadFile("/proc/loadavg")
		fmt.Fprintf(w, "%d\t\t\tload average after the run: %s\n", r, strings.Join(strings.Fields(string(load))[:3], " "))
	}
	w.Flush()
	ratio := regexp.MustCompile(`ratio relayed/direct ([0-9.]+)`).FindStringSubmatch(throughput)
	times := regexp.MustCompile(`after ([0-9.]+m?s)`).FindAllStringSubmatch(cut, -1)
	summary := "summary:"
	if ratio != nil {
		summary += " relayed/direct throughput " + ratio[1] + ";"
	}
	if len(times) == 2 {
		summary += fmt.Sprintf(" cut direct path → relayed in %s, back to direct in %s (KubeSpan, computed: ≥ 275 s to even notice);", times[0][1], times[1][1])
	}
	if joins := slowestJoin["this tree"]; len(joins) > 0 {
		summary += " slowest of five joins, min/median/max: this tree " + spread(joins)
		if prev := slowestJoin[*before]; *before != "" && len(prev) > 0 {
			summary += fmt.Sprintf(", %s %s, ratio of medians this/%s %.2f", *before, spread(prev), *before,
				float64(median(joins))/float64(median(prev)))
		}
		summary += ";"
	}
	summary += fmt.Sprintf(" %d test runs failed (a failed run of the before build is the figure it measures)", failed)
	fmt.Println(summary)
}

// buildRef builds cmd/uncloud at ref in a temporary worktree.
func buildRef(ref, tmp string) (string, error) {
	wt := filepath.Join(tmp, "worktree")
	if out, err := exec.Command("git", "worktree", "add", "--detach", wt, ref).CombinedOutput(); err != nil {
		return "", fmt.Errorf("worktree for %s: %v\n%s", ref, err, out)
	}
	defer exec.Command("git", "worktree", "remove", "--force", wt).Run()
	bin := filepath.Join(tmp, "uncloud-before")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/uncloud")
	cmd.Dir = wt
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", ref, err, out)
	}
	return bin, nil
}

// spread is "min/median/max (n runs)".
func spread(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("%s/%s/%s (%d runs)", r(s[0]), r(median(s)), r(s[len(s)-1]), len(s))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/nat:", err)
	os.Exit(1)
}
