// Command nat reports the NAT traversal figures of issue 5: it runs the
// e2e test TestNATTraversal (real agents formed with init/token/join in
// network namespaces behind real nftables NATs: public p and q, a and b
// behind endpoint-independent NATs, c and d behind symmetric NATs, e
// public with unsolicited UDP dropped) and prints the figures it logs:
//
//	sudo go run ./bench/nat [-runs 1]
//
// Times come from the test's own clocks (polling `uncloud mesh` every
// 250 ms, so ±250 ms); throughputs from 10 MB transfers with a sha256
// check. The KubeSpan line is computed from its documented timers, not
// measured. The machine's load average is printed with the figures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"text/tabwriter"
)

func main() {
	runs := flag.Int("runs", 1, "how many times to run the scenario")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/nat needs root (network namespaces, nftables): sudo go run ./bench/nat")
		os.Exit(2)
	}
	figure := regexp.MustCompile(`FIGURE (.*)$`)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RUN\tFIGURE")
	var throughput, cut string
	failed := 0
	for r := 1; r <= *runs; r++ {
		load, _ := os.ReadFile("/proc/loadavg")
		fmt.Fprintf(os.Stderr, "run %d (load average %s)…\n", r, strings.Join(strings.Fields(string(load))[:3], " "))
		cmd := exec.Command("go", "test", "-count=1", "-run", "^TestNATTraversal$", "-v", "-timeout", "15m", "./e2e/")
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := figure.FindStringSubmatch(sc.Text()); m != nil {
				fmt.Fprintf(w, "%d\t%s\n", r, m[1])
				if strings.HasPrefix(m[1], "throughput") {
					throughput = m[1]
				}
				if strings.HasPrefix(m[1], "a↔b direct path cut") {
					cut = m[1]
				}
			}
		}
		if err := cmd.Wait(); err != nil {
			failed++
			fmt.Fprintf(w, "%d\tthe scenario FAILED: %v (figures above are partial)\n", r, err)
		}
		load, _ = os.ReadFile("/proc/loadavg")
		fmt.Fprintf(w, "%d\tload average after the run: %s\n", r, strings.Join(strings.Fields(string(load))[:3], " "))
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
	summary += fmt.Sprintf(" %d of %d runs failed", failed, *runs)
	fmt.Println(summary)
	if failed > 0 {
		os.Exit(1)
	}
}
