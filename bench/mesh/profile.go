package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// profileRun runs one extra one-stream iperf3 (not counted in the table,
// since sampling perturbs it) under a machine-wide perf sample, and writes
// where the CPU time went to dir/<row>.txt: first per process (which shows
// how much is kernel softirq work in ksoftirqd), then per symbol. It answers
// "what does the profile show" when a target is missed.
func profileRun(ctx context.Context, env *environment, l *lab, s *session, row string, reverse bool) (string, error) {
	dir := env.opts.profile
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create profile dir %s: %w", dir, err)
	}
	name := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(row)
	data := filepath.Join(l.dir, name+".perf.data")
	secs := strconv.Itoa(int(env.opts.duration.Seconds()))
	// cpu-clock works in VMs without hardware counters; -a includes the
	// kernel's softirq work, which a per-process profile would miss.
	perf, err := startDaemon("perf record", filepath.Join(l.dir, name+".perf.log"), nil,
		"perf", "record", "-e", "cpu-clock", "-F", "999", "-a", "-o", data, "--", "sleep", secs)
	if err != nil {
		return "", err
	}
	defer perf.stop()
	if _, err := iperfOnce(ctx, env, l, s, 1, reverse); err != nil {
		return "", fmt.Errorf("profiled run: %w", err)
	}
	select {
	case <-perf.done:
	case <-ctx.Done():
		return "", fmt.Errorf("perf record: %w", ctx.Err())
	case <-time.After(env.opts.duration + 15*time.Second):
		return "", fmt.Errorf("perf record did not finish")
	}
	var report strings.Builder
	fmt.Fprintf(&report, "# %s: perf record -e cpu-clock -F 999 -a during a %ss one-stream iperf3 (reverse=%v)\n\n", row, secs, reverse)
	for _, sortBy := range []string{"comm", "comm,dso,symbol"} {
		out, err := runCmd(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sortBy, "--percent-limit", "0.5")
		if err != nil {
			return "", fmt.Errorf("perf report --sort %s: %w", sortBy, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "#") {
				report.WriteString(strings.TrimRight(line, " -") + "\n")
			}
		}
		report.WriteString("\n")
	}
	path := filepath.Join(dir, name+".txt")
	if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
		return "", fmt.Errorf("write profile %s: %w", path, err)
	}
	_ = os.Remove(data)
	return path, nil
}
