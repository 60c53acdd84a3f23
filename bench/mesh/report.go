package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"
)

// result is one table row.
type result struct {
	peer      string
	rtt       rttStats
	one, four throughput
	peakRSS   int64 // KiB, the largest of the tunnel daemons over the row's runs
	note      string
	err       error
}

func printConditions(w io.Writer, env *environment) {
	fmt.Fprintf(w, "# bench/mesh %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- machine: %d CPUs, %s, kernel %s\n", runtime.NumCPU(), env.cpuModel, env.kernel)
	fmt.Fprintf(w, "- iperf3: %s per run, 1 and 4 streams, median over %d interleaved round(s); ping: %d at %s, idle, and every 100 ms during each run (from its 2nd second to 1 s before its end); daemon peak RSS over each row's runs (VmHWM, reset before the row)\n",
		env.opts.duration, env.opts.repeat, env.opts.pings, env.opts.pingEvery)
	fmt.Fprintf(w, "- pinning: %s (client CPU %d, server CPU %d, daemons A %d / B %d; -1 = unpinned)\n",
		env.pin.mode, env.pin.client, env.pin.server, env.pin.daemonA, env.pin.daemonB)
	if env.wgVersion != "" {
		fmt.Fprintf(w, "- wg-current: golang.zx2c4.com/wireguard@%s\n", env.wgVersion)
	}
	if la, err := loadAverage(); err == nil {
		fmt.Fprintf(w, "- load average at start: %s\n", la)
	}
	fmt.Fprintln(w)
}

func printTable(w io.Writer, rs []result) {
	fmt.Fprintln(w, "| peer | 1-stream Gbit/s | 4-stream Gbit/s | retransmits 1/4 | RTT p50 ms (min/avg) | RTT p50 under load ms (max) | CPU s/Gbit proc | CPU s/Gbit host | daemon peak RSS MiB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	var notes []string
	for _, r := range rs {
		if r.note != "" && !slices.Contains(notes, r.note) {
			notes = append(notes, r.note)
		}
		if r.one.gbps == 0 {
			fmt.Fprintf(w, "| %s | – | – | – | %s | – | – | – | – |\n", r.peer, rttCell(r.rtt))
			continue
		}
		four := "–"
		if r.four.gbps > 0 {
			four = fmt.Sprintf("%.2f", r.four.gbps)
		}
		rss := "–"
		if r.peakRSS > 0 {
			rss = fmt.Sprintf("%.0f", float64(r.peakRSS)/1024)
		}
		fmt.Fprintf(w, "| %s | %.2f | %s | %d/%d | %s | %s | %.2f | %.2f | %s |\n",
			r.peer, r.one.gbps, four, r.one.retrans, r.four.retrans, rttCell(r.rtt), loadedCell(r.one.loaded),
			r.one.procPerGbit(), r.one.hostPerGbit(), rss)
	}
	fmt.Fprintln(w)
	for _, n := range notes {
		fmt.Fprintln(w, "- "+n)
	}
	for _, r := range rs {
		if r.err != nil {
			fmt.Fprintf(w, "- %s: ERROR %v\n", r.peer, r.err)
		}
	}
	fmt.Fprintln(w)
}

// rttCell shows idle pings: p50 (min/avg).
func rttCell(r rttStats) string {
	if r.recv == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3f (%.3f/%.3f%s)", r.p50, r.min, r.avg, r.lossNote())
}

// loadedCell shows pings under load: p50 (max).
func loadedCell(r rttStats) string {
	if r.recv == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3f (%.3f%s)", r.p50, r.max, r.lossNote())
}

// lossNote is ", N/M lost" when some pings went unanswered.
func (r rttStats) lossNote() string {
	if r.recv >= r.sent {
		return ""
	}
	return fmt.Sprintf(", %d/%d lost", r.sent-r.recv, r.sent)
}

// printSummary prints the ratios the targets are stated in (issue 2).
func printSummary(w io.Writer, rs []result) {
	get := func(name string) *result {
		for i := range rs {
			if rs[i].peer == name && rs[i].one.gbps > 0 {
				return &rs[i]
			}
		}
		return nil
	}
	ratio := func(a, b *result, four bool) string {
		if a == nil || b == nil {
			return "n/a"
		}
		x, y := a.one.gbps, b.one.gbps
		if four {
			x, y = a.four.gbps, b.four.gbps
		}
		if y == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f×", x/y)
	}
	pair := func(a, b *result) string {
		return ratio(a, b, false) + " (4 streams " + ratio(a, b, true) + ")"
	}
	loaded := func(r *result) string {
		if r == nil || r.one.loaded.recv == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f ms", r.one.loaded.p50)
	}
	added := func(r, raw *result) string {
		if r == nil || raw == nil || r.rtt.recv == 0 || raw.rtt.recv == 0 {
			return "n/a"
		}
		return fmt.Sprintf("+%.3f ms", r.rtt.p50-raw.rtt.p50)
	}
	anyRow := func(name string) *result {
		for i := range rs {
			if rs[i].peer == name {
				return &rs[i]
			}
		}
		return nil
	}
	raw, tun, cur := get("raw"), get("uncloud-tun"), get("wg-current")
	nsRecv, nsSend := get("uncloud-netstack (ns receives)"), get("uncloud-netstack (ns sends)")
	deb, neb := get("wg-debian"), get("nebula")
	parts := []string{
		"uncloud-tun/wg-current " + pair(tun, cur) + " [target ≥ 0.95]",
		"netstack/tun receive " + pair(nsRecv, tun) + ", send " + pair(nsSend, tun) + " [target ≥ 0.9]",
		"RTT added over veth (p50): uncloud-tun " + added(anyRow("uncloud-tun"), anyRow("raw")) + " vs wg-current " + added(anyRow("wg-current"), anyRow("raw")) + " [target ≤ wg-current, stretch ≤ +0.3 ms]",
		"RTT p50 under a 1-stream load: uncloud-tun " + loaded(tun) + " vs wg-current " + loaded(cur) + ", ns sends " + loaded(nsSend),
		"containers veth/tun: B receives " + pair(get("ctr-veth (B receives)"), get("ctr-tun (B receives)")) +
			", B sends " + pair(get("ctr-veth (B sends)"), get("ctr-tun (B sends)")) + " [target ≥ 0.5]",
		"nebula/wg-current " + pair(neb, cur),
		"wg-debian/wg-current " + pair(deb, cur),
		"wg-current/raw " + pair(cur, raw),
	}
	fmt.Fprintln(w, "**Summary:** "+strings.Join(parts, "; "))
	if la, err := loadAverage(); err == nil {
		fmt.Fprintf(w, "\n(load average at end: %s)\n", la)
	}
}

// combineRounds merges the rounds into one row per peer: each figure is the
// median over the rounds in which it was measured (throughput by Gbit/s,
// together with that run's retransmits and CPU; RTT by p50). Failures are
// counted and the last one kept.
func combineRounds(rounds [][]result) []result {
	var names []string
	byName := map[string][]result{}
	for _, rs := range rounds {
		for _, r := range rs {
			if _, ok := byName[r.peer]; !ok {
				names = append(names, r.peer)
			}
			byName[r.peer] = append(byName[r.peer], r)
		}
	}
	var out []result
	for _, n := range names {
		rs := byName[n]
		row := result{peer: n}
		var ones, fours []throughput
		var rtts []rttStats
		var failed int
		for _, r := range rs {
			if r.note != "" {
				row.note = r.note
			}
			if r.err != nil {
				failed++
				row.err = fmt.Errorf("failed in %d of %d round(s), last: %w", failed, len(rs), r.err)
			}
			if r.one.gbps > 0 {
				ones = append(ones, r.one)
			}
			if r.four.gbps > 0 {
				fours = append(fours, r.four)
			}
			if r.rtt.recv > 0 {
				rtts = append(rtts, r.rtt)
			}
			row.peakRSS = max(row.peakRSS, r.peakRSS)
		}
		row.one, row.four = medianThroughput(ones), medianThroughput(fours)
		if len(rtts) > 0 {
			slices.SortFunc(rtts, func(a, b rttStats) int { return cmpFloat(a.p50, b.p50) })
			row.rtt = rtts[len(rtts)/2]
		}
		out = append(out, row)
	}
	return out
}

func medianThroughput(ts []throughput) throughput {
	if len(ts) == 0 {
		return throughput{}
	}
	slices.SortFunc(ts, func(a, b throughput) int { return cmpFloat(a.gbps, b.gbps) })
	return ts[len(ts)/2]
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
