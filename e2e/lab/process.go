package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a long-running command inside a host namespace. Its standard
// output and standard error are kept in memory (for WaitOutput/WaitLog) and
// copied to files in the lab directory (for a person reading them after a
// failure). The lab kills it on Close if it is still running.
type Process struct {
	Name    string // short label, e.g. "h1/uncloud"
	Cmd     *exec.Cmd
	LogPath string // standard error
	OutPath string // standard output

	stdout *watchedBuffer
	stderr *watchedBuffer
	done   chan struct{}
	err    error // valid once done is closed
}

// startProcess starts cmd, recording output under dir/label.{out,log}.
func startProcess(cmd *exec.Cmd, dir, label string) (*Process, error) {
	file := strings.ReplaceAll(label, "/", "-")
	p := &Process{
		Name:    label,
		Cmd:     cmd,
		LogPath: dir + "/" + file + ".log",
		OutPath: dir + "/" + file + ".out",
		done:    make(chan struct{}),
	}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	outf, err := os.Create(p.OutPath)
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	p.stdout = newWatchedBuffer(outf)
	p.stderr = newWatchedBuffer(logf)
	cmd.Stdout = p.stdout
	cmd.Stderr = p.stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Own process group, so a stop reaches any children too; die with the
	// test binary so a killed `go test` leaves no agents behind.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		outf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", label, quoteCmd(cmd.Path, cmd.Args[1:]), err)
	}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		outf.Close()
		p.stdout.close()
		p.stderr.close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Alive reports whether the process has not exited yet.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits for the process to exit and returns its exit error (nil for
// status 0), or ctx's error.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("wait for %s: %w", p.Name, ctx.Err())
	}
}

// ExitCode returns the exit status, or -1 while running or if killed by a signal.
func (p *Process) ExitCode() int {
	if p.Alive() {
		return -1
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return fmt.Errorf("signal %v to %s: already exited", sig, p.Name)
	}
	if err := p.Cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Stop asks the process group to terminate (SIGTERM) and kills it (SIGKILL)
// after grace. It returns the exit error, ignoring the one the signals cause.
func (p *Process) Stop(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	pgid := -p.Pid()
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stop %s (pid %d): still running 5s after SIGKILL", p.Name, p.Pid())
	}
}

// Log returns the standard error so far.
func (p *Process) Log() string { return p.stderr.String() }

// Output returns the standard output so far.
func (p *Process) Output() string { return p.stdout.String() }

// WaitLog waits until standard error contains substr (at or after byte
// offset from) and returns the offset just past the match. It fails early if
// the process exits without printing it.
func (p *Process) WaitLog(ctx context.Context, from int, substr string) (int, error) {
	return p.waitFor(ctx, p.stderr, "log", from, substr)
}

// WaitLogAny waits until standard error contains one of substrs (at or
// after from) and returns which one came first and the offset past it.
func (p *Process) WaitLogAny(ctx context.Context, from int, substrs ...string) (string, int, error) {
	for {
		content, changed, closed := p.stderr.snapshot()
		best, bestAt := "", -1
		if from < len(content) {
			for _, sub := range substrs {
				if i := strings.Index(content[from:], sub); i >= 0 && (bestAt < 0 || i < bestAt) {
					best, bestAt = sub, i
				}
			}
		}
		if bestAt >= 0 {
			return best, from + bestAt + len(best), nil
		}
		if closed {
			<-p.done
			return "", 0, fmt.Errorf("%s exited (%v) before its log said any of %q; it said:\n%s", p.Name, p.err, substrs, tail(content, 4000))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", 0, fmt.Errorf("%s: waiting for any of %q in its log: %w; it said:\n%s", p.Name, substrs, ctx.Err(), tail(content, 4000))
		}
	}
}

// WaitOutput is WaitLog for standard output.
func (p *Process) WaitOutput(ctx context.Context, from int, substr string) (int, error) {
	return p.waitFor(ctx, p.stdout, "output", from, substr)
}

// LogLen returns the current length of the standard error, to pass as from.
func (p *Process) LogLen() int { return p.stderr.Len() }

func (p *Process) waitFor(ctx context.Context, b *watchedBuffer, what string, from int, substr string) (int, error) {
	for {
		content, changed, closed := b.snapshot()
		if from < len(content) {
			if i := strings.Index(content[from:], substr); i >= 0 {
				return from + i + len(substr), nil
			}
		}
		if closed {
			<-p.done
			return 0, fmt.Errorf("%s exited (%v) before its %s said %q; it said:\n%s", p.Name, p.err, what, substr, tail(content, 4000))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, fmt.Errorf("%s: waiting for %q in its %s: %w; it said:\n%s", p.Name, substr, what, ctx.Err(), tail(content, 4000))
		}
	}
}

// watchedBuffer is an io.Writer that keeps what was written (up to a cap, the
// file gets everything) and wakes up waiters on every write.
type watchedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	file    io.Writer
	changed chan struct{}
	closed  bool
}

// maxKept bounds memory for chatty processes; waiters look at the start of
// the output (readiness lines), the file keeps the rest.
const maxKept = 8 << 20

func newWatchedBuffer(file io.Writer) *watchedBuffer {
	return &watchedBuffer{file: file, changed: make(chan struct{})}
}

func (w *watchedBuffer) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() < maxKept {
		w.buf.Write(b)
	}
	_, _ = w.file.Write(b) // a full disk must not kill the process under test
	close(w.changed)
	w.changed = make(chan struct{})
	return len(b), nil
}

func (w *watchedBuffer) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *watchedBuffer) snapshot() (string, <-chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.changed, w.closed
}

func (w *watchedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *watchedBuffer) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// RSS returns the process's resident memory in bytes, from /proc.
func (p *Process) RSS() (int64, error) { return p.memory("VmRSS") }

// AnonRSS is the resident anonymous memory (heap, stacks): RSS without
// the binary's file-backed pages, which several lab processes of one
// binary share.
func (p *Process) AnonRSS() (int64, error) { return p.memory("RssAnon") }

// memory reads one "NAME: N kB" field of /proc/PID/status, in bytes.
func (p *Process) memory(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, fmt.Errorf("memory of %s: %w", p.Name, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("memory of %s: parse %q: %w", p.Name, line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("memory of %s: no %s in /proc/%d/status", p.Name, field, p.Pid())
}
