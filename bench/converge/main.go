// Command converge measures how fast uncloud's replicated state (package
// crdt) converges over real gossip (memberlist on 127.0.1.x) with blocks
// fetched over HTTP on loopback, all replicas in one process:
//
//	go run ./bench/converge [-quick]
//
// It prints a table (figure, value, target, method) and a one-line summary.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"
)

type row struct {
	figure, value, target, method string
	ok                            bool
}

func main() {
	quick := flag.Bool("quick", false, "fewer writes (a smoke run)")
	only := flag.String("only", "", "run one figure: latency, heal, catchup, writes, rss")
	pairs := flag.Int("pairs", 1, "signed latency: rounds of 20 replicas unsigned then signed (the first unsigned one is the 20-replica row); all writes of each side pooled")
	rssChild := flag.String("rss-child", "", "internal: measure one store's RSS in this data directory")
	flag.Parse()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("CONVERGE_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	}
	ctx := context.Background()
	if *rssChild != "" {
		if err := measureRSS(ctx, *rssChild, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	catchN, healN := 10_000, 1_000
	if *quick {
		catchN, healN = 2_000, 200
	}
	var rows []row
	add := func(r row, err error) {
		if err != nil {
			r.value = "error: " + err.Error()
			r.ok = false
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "  %s: %s\n", r.figure, r.value)
	}
	run := func(name string) bool { return *only == "" || *only == name }
	if !run("latency") {
		rows = append(rows, row{}, row{}) // keep the summary's indexes valid
	}
	var unsigned20 []time.Duration // the 20-replica row's samples, for the signed comparison
	for _, n := range []int{5, 20} {
		if !run("latency") {
			break
		}
		writes := 200
		if n == 20 {
			writes = 100
		}
		lats, err := latencies(ctx, log, n, writes)
		var p50, p99 time.Duration
		if err == nil {
			p50, p99 = percentiles(lats)
			if n == 20 {
				unsigned20 = lats
			}
		}
		add(row{
			figure: fmt.Sprintf("write→visible everywhere, %d replicas", n),
			value:  fmt.Sprintf("p50 %s, p99 %s", ms(p50), ms(p99)),
			target: map[int]string{5: "-", 20: "p99 < 500 ms"}[n],
			method: fmt.Sprintf("%d writes rotating over writers, 20 ms apart; max over replicas' Watch events", writes),
			ok:     n != 20 || p99 < 500*time.Millisecond,
		}, err)
	}
	signedSummary := ""
	if run("latency") {
		r, sr := signedRows(ctx, log, *pairs, unsigned20)
		add(r, nil)
		add(sr, nil)
		signedSummary = "; signatures add at 20 replicas " + sr.value
	}
	var heal, catch time.Duration
	var rss float64
	var err error
	if run("heal") {
		heal, err = partitionHeal(ctx, log, healN)
		add(row{
			figure: fmt.Sprintf("convergence after heal, %d writes per side", healN),
			value:  ms(heal), target: "< 2 s",
			method: "5 replicas cut 2|3 (messages and fetches dropped), heal + one push/pull across, until digests match",
			ok:     heal < 2*time.Second,
		}, err)
	}
	if run("catchup") {
		catch, err = catchUp(ctx, log, catchN)
		add(row{
			figure: fmt.Sprintf("catch-up after missing %d writes", catchN),
			value:  ms(catch), target: "< 5 s",
			method: "5 replicas, one store closed during the writes, reopened on its gossip node, until digest matches",
			ok:     catch < 5*time.Second,
		}, err)
	}
	if run("writes") {
		wps, err := writeRate(ctx, log, 5_000)
		add(row{
			figure: "writes/s on one replica",
			value:  fmt.Sprintf("%.0f", wps), target: "-",
			method: "5,000 sequential Puts on one of 5 replicas (each merged, stored and broadcast)",
			ok:     true,
		}, err)
	}
	if run("rss") {
		f, err := rssOf(ctx)
		rss = f.limited
		add(row{
			figure: "RSS with 10,000 records",
			value:  fmt.Sprintf("%.1f MB with GOMEMLIMIT=32MiB; %.1f MB without (%.1f MB once freed pages are returned)", f.limited, f.peak, f.settled),
			target: "< 60 MB",
			method: "child process, one store alone, 10,000 container records, VmRSS after GC",
			ok:     f.limited < 60 && f.settled < 60,
		}, err)
		add(row{
			figure: "store size per 10,000 records after churn",
			value:  f.churn, target: "-",
			method: "same child: 10,000 created then deleted, disk blocks allocated under the data dir",
			ok:     true,
		}, err)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\ttarget\tmet\tmethod")
	met := 0
	for _, r := range rows {
		mark := "yes"
		if !r.ok {
			mark = "NO"
		} else {
			met++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.figure, r.value, r.target, mark, r.method)
	}
	tw.Flush()
	fmt.Printf("summary: %d/%d figures within target; 20-replica p99 %s of 500 ms budget, heal %s of 2 s, catch-up %s of 5 s, RSS %.0f%% of 60 MB%s\n",
		met, len(rows), pct(rows[1].value), ratio(heal, 2*time.Second), ratio(catch, 5*time.Second), 100*rss/60, signedSummary)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func ratio(d, of time.Duration) string { return fmt.Sprintf("%.0f%%", 100*float64(d)/float64(of)) }

// pct pulls the p99 out of a latency row value.
func pct(v string) string {
	_, p99, ok := strings.Cut(v, "p99 ")
	if !ok {
		return "?"
	}
	var f float64
	fmt.Sscanf(p99, "%f", &f)
	return fmt.Sprintf("%.0f%%", 100*f/500)
}

// rssFigures are one store's memory with 10,000 records.
type rssFigures struct {
	peak, settled, limited float64 // MB: after the writes, after returning freed pages, with GOMEMLIMIT=32MiB
	churn                  string
}

// rssOf re-executes this program as a child so the figure is one store's
// footprint, not the whole benchmark's.
func rssOf(ctx context.Context) (rssFigures, error) {
	var f rssFigures
	for _, limit := range []string{"", "32MiB"} {
		dir, err := os.MkdirTemp("", "converge-rss-")
		if err != nil {
			return f, err
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-rss-child", dir)
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+limit)
		if limit == "" {
			cmd.Env = append(os.Environ(), "GOMEMLIMIT=off")
		}
		out, err := cmd.Output()
		os.RemoveAll(dir)
		if err != nil {
			return f, fmt.Errorf("rss child: %w", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			var v float64
			switch {
			case strings.HasPrefix(line, "rss_mb "):
				fmt.Sscanf(line[len("rss_mb "):], "%f", &v)
				if limit == "" {
					f.peak = v
				} else {
					f.limited = v
				}
			case strings.HasPrefix(line, "rss_settled_mb ") && limit == "":
				fmt.Sscanf(line[len("rss_settled_mb "):], "%f", &f.settled)
			case strings.HasPrefix(line, "churn ") && limit == "":
				f.churn = line[len("churn "):]
			}
		}
	}
	return f, nil
}

// logLevel is CONVERGE_LOG=debug|info|warn (warn by default).
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("CONVERGE_LOG"))); err != nil {
		return slog.LevelWarn
	}
	return l
}
