package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// namePrefix marks everything this program creates (namespaces, temp dirs,
// interface names), followed by the creating process id, so that a later run
// can tell its own leftovers from those of a run still in progress.
const namePrefix = "ucbm"

// Underlay addresses on the veth pair between the two namespaces.
const (
	underlayA = "10.99.0.1"
	underlayB = "10.99.0.2"
)

// lab is one pair of namespaces, A (iperf3 client) and B (iperf3 server),
// joined by a veth pair. Each peer gets a fresh lab so that no device,
// route or process of one peer can influence the next.
type lab struct {
	a, b  string   // namespace names
	extra []string // more namespaces a peer made (containers), deleted first
	dir   string   // per-lab directory for configs and logs
	tag   string   // short unique tag for interface names (≤ 15 chars total)
	pin   pinning
	log   *slog.Logger
}

// newLab creates namespaces <prefix><pid>-<idx>a and …b with a veth pair.
func newLab(ctx context.Context, env *environment, idx int, peer string) (*lab, error) {
	base := fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), idx)
	l := &lab{
		a:   base + "a",
		b:   base + "b",
		dir: filepath.Join(env.tmp, fmt.Sprintf("%d-%s", idx, peer)),
		tag: fmt.Sprintf("%d%d", os.Getpid()%100000, idx),
		pin: env.pin,
		log: env.log,
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create lab dir %s: %w", l.dir, err)
	}
	steps := [][]string{
		{"ip", "netns", "add", l.a},
		{"ip", "netns", "add", l.b},
		// Created inside A with the peer end moved straight into B, so the
		// veth never appears in the root namespace.
		{"ip", "-n", l.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", l.b},
		{"ip", "-n", l.a, "addr", "add", underlayA + "/24", "dev", "veth0"},
		{"ip", "-n", l.b, "addr", "add", underlayB + "/24", "dev", "veth0"},
		{"ip", "-n", l.a, "link", "set", "lo", "up"},
		{"ip", "-n", l.b, "link", "set", "lo", "up"},
		{"ip", "-n", l.a, "link", "set", "veth0", "up"},
		{"ip", "-n", l.b, "link", "set", "veth0", "up"},
	}
	for _, s := range steps {
		if _, err := runCmd(ctx, s...); err != nil {
			l.close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("create lab %s: %w", base, err)
		}
	}
	return l, nil
}

// nsCmd returns argv that runs argv inside namespace ns, pinned to cpu when
// cpu ≥ 0. Both ip netns exec and taskset exec the target, so the process we
// start is the target itself (its pid and rusage are the target's).
func nsCmd(ns string, cpu int, argv ...string) []string {
	out := []string{"ip", "netns", "exec", ns}
	if cpu >= 0 {
		out = append(out, "taskset", "-c", strconv.Itoa(cpu))
	}
	return append(out, argv...)
}

// close kills whatever still runs in the namespaces and deletes them.
// Deleting a namespace alone would leave its processes (and their TUN
// devices) alive, so processes go first.
func (l *lab) close(ctx context.Context) {
	for _, ns := range append(append([]string{}, l.extra...), l.a, l.b) {
		deleteNamespace(ctx, l.log, ns)
	}
}

func deleteNamespace(ctx context.Context, log *slog.Logger, ns string) {
	for attempt := 0; attempt < 3; attempt++ {
		pids := namespacePids(ctx, ns)
		if len(pids) == 0 {
			break
		}
		sig := syscall.SIGTERM
		if attempt > 0 {
			sig = syscall.SIGKILL
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := runCmd(ctx, "ip", "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
		log.Warn("delete namespace", "ns", ns, "err", err)
	}
}

func namespacePids(ctx context.Context, ns string) []int {
	out, err := runCmd(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

var leftoverName = regexp.MustCompile(`^` + namePrefix + `(\d+)-`)

// cleanupLeftovers removes namespaces and temp dirs of earlier runs whose
// process is gone (an interrupted or killed run cannot clean up itself).
// Runs still alive are left alone.
func cleanupLeftovers(ctx context.Context, log *slog.Logger) {
	out, err := runCmd(ctx, "ip", "netns", "list")
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if ownerGone(f[0]) {
				log.Info("removing leftover namespace", "ns", f[0])
				deleteNamespace(ctx, log, f[0])
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), namePrefix+"*"))
	for _, d := range dirs {
		if ownerGone(filepath.Base(d)) {
			log.Info("removing leftover temp dir", "dir", d)
			_ = os.RemoveAll(d)
		}
	}
}

// ownerGone reports whether name is one of ours and its creating process
// no longer exists.
func ownerGone(name string) bool {
	m := leftoverName.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid == os.Getpid() {
		return false
	}
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	// A run killed with -9 stays a zombie until its parent reaps it; it
	// will never clean up, so it counts as gone.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}
