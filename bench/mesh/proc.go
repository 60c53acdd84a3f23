package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runCmd runs argv to completion and returns its stdout. The error names the
// command and carries the tail of its stderr, which is usually the reason.
func runCmd(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, tail(stderr.String(), 400))
	}
	return stdout.Bytes(), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// daemon is a long-running process (a tunnel daemon or an iperf3 server)
// whose stderr and stdout go to a log file and are watched for a readiness
// line.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	out     *watchedLog
	done    chan struct{}
	waitErr error
}

// startDaemon starts argv with extra environment variables env. It is not
// bound to a context: the caller stops it with stop, also on cancellation,
// so that it is never left half-killed.
func startDaemon(name, logPath string, env []string, argv ...string) (*daemon, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	w := &watchedLog{file: f}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), env...)
	// Own process group: a terminal Ctrl-C reaches only us, and we stop the
	// daemons in order instead of racing their own signal handling.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	d := &daemon{name: name, cmd: cmd, out: w, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		f.Close()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// waitFor waits until the daemon's output contains substr, the daemon exits,
// or ctx ends.
func (d *daemon) waitFor(ctx context.Context, substr string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if d.out.contains(substr) {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s exited before %q: %v: %s", d.name, substr, d.waitErr, tail(d.out.String(), 600))
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %q: %w; output: %s", d.name, substr, ctx.Err(), tail(d.out.String(), 600))
		case <-t.C:
		}
	}
}

// exited reports whether the daemon has stopped, with its output tail.
func (d *daemon) exited() (bool, string) {
	select {
	case <-d.done:
		return true, fmt.Sprintf("%s exited: %v: %s", d.name, d.waitErr, tail(d.out.String(), 600))
	default:
		return false, ""
	}
}

// stop asks the daemon to exit and kills it if it has not within 5 s.
func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// rusageSeconds is the CPU time the exited daemon consumed (user + system).
func (d *daemon) rusageSeconds() float64 {
	<-d.done
	st := d.cmd.ProcessState
	if st == nil {
		return 0
	}
	return (st.UserTime() + st.SystemTime()).Seconds()
}

// watchedLog is an io.Writer that writes to a file and keeps the text so it
// can be searched for readiness lines and quoted in errors.
type watchedLog struct {
	mu   sync.Mutex
	file *os.File
	buf  bytes.Buffer
}

func (w *watchedLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Keep at most 1 MiB in memory; the file has everything.
	if w.buf.Len() < 1<<20 {
		w.buf.Write(p)
	}
	return w.file.Write(p)
}

func (w *watchedLog) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.buf.Bytes(), []byte(s))
}

func (w *watchedLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// clockTicks is USER_HZ, the unit of /proc/*/stat and /proc/stat times. It
// is 100 on every Linux ABI Go supports.
const clockTicks = 100

// processCPU returns utime+stime of pid (all its threads) in seconds.
func processCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	// The command name (field 2) may contain spaces; fields after the last
	// ')' are fixed. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return (ut + st) / clockTicks, nil
}

// hostCPU returns the busy CPU seconds of the whole machine (all CPUs, all
// states but idle and iowait) from /proc/stat. It includes softirq work that
// per-process accounting misses, and also everyone else's work.
func hostCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: unexpected first line %q", line)
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // steal counts as not ours; guest is already in user
			break
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat field %d %q: %w", i+1, v, err)
		}
		busy += n
	}
	return busy / clockTicks, nil
}

func loadAverage() (string, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "", fmt.Errorf("read /proc/loadavg: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "", fmt.Errorf("parse /proc/loadavg %q", b)
	}
	return strings.Join(f[:3], " "), nil
}

// resetPeakRSS starts pid's peak resident set size (VmHWM) again from its
// current RSS, so that a later peakRSS covers only what ran in between.
func resetPeakRSS(pid int) error {
	path := "/proc/" + strconv.Itoa(pid) + "/clear_refs"
	if err := os.WriteFile(path, []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss of pid %d: %w", pid, err)
	}
	return nil
}

// peakRSS returns pid's peak resident set size in KiB.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read peak rss of pid %d: %w", pid, err)
	}
	kib, err := parseVmHWM(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return kib, nil
}

// parseVmHWM reads the VmHWM line ("VmHWM:    12345 kB") of a
// /proc/PID/status.
func parseVmHWM(status []byte) (int64, error) {
	for line := range strings.Lines(string(status)) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse status: VmHWM line %q", strings.TrimSpace(line))
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse status: VmHWM: %w", err)
		}
		return v, nil
	}
	return 0, errors.New("parse status: no VmHWM line")
}
