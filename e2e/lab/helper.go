package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Helpers are Go programs that run inside a host namespace: the lab
// re-executes the current binary (the test binary, or a command that calls
// HelperMain) under `ip netns exec` with $UNCLOUD_LAB_HELPER naming the mode.
// Re-execution is more robust than switching an OS thread's namespace with
// netns.Set: the whole process, every thread and every socket, is in the
// host's namespace, and a crash in a helper cannot take the test with it.
//
// Protocol: a helper that serves prints "ready <addr>" on its standard
// output once listening; every helper prints one JSON result line last;
// errors go to standard error with exit status 1.

// HelperFunc is a helper mode: it runs inside a host namespace with the
// arguments given to RunHelper or StartHelper, writes its results to
// stdout, and its error ends the process with status 1.
type HelperFunc func(ctx context.Context, args []string, stdout io.Writer) error

func helpers() map[string]HelperFunc {
	return map[string]HelperFunc{
		"sink":     helperSink,
		"source":   helperSource,
		"echo":     helperEcho,
		"dial":     helperDial,
		"hold":     helperHold,
		"ping":     helperPing,
		"udpsend":  helperUDPSend,
		"udpflood": helperUDPFlood,
		"udpecho":  helperUDPEcho,
		"udpprobe": helperUDPProbe,
		// helpers_raw.go: an attacker on the wire.
		"udpcapture": helperUDPCapture,
		"udpspoof":   helperUDPSpoof,
		"stunflood":  helperSTUNFlood,
	}
}

func runHelper(mode string, args []string, extra map[string]HelperFunc) int {
	h, ok := helpers()[mode]
	if !ok {
		h, ok = extra[mode]
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "lab helper: unknown mode %q\n", mode)
		return 2
	}
	// Helpers end when the test stops them or when their own -timeout
	// (every mode has one) runs out.
	if err := h(context.Background(), args, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "lab helper %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// newFlags returns a flag set for a helper mode that reports errors
// instead of exiting.
func newFlags(mode string) *flag.FlagSet {
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("flags %q: %w", args, err)
	}
	return nil
}

// withTimeout bounds a helper by its -timeout flag.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = time.Minute
	}
	return context.WithTimeout(ctx, d)
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// helperArgv returns the command line and environment that run helper
// mode inside h.
func (h *Host) helperArgv(mode string, args ...string) (argv, env []string, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find own executable for helper %s: %w", mode, err)
	}
	return h.argv(exe, args...), append(os.Environ(), EnvHelper+"="+mode), nil
}

// runHelperJSON runs a helper to completion and decodes its last output
// line into result.
func (h *Host) runHelperJSON(ctx context.Context, result any, mode string, args ...string) error {
	out, err := h.RunHelper(ctx, mode, args...)
	if err != nil {
		return err
	}
	return decodeLastLine([]byte(out), result, fmt.Sprintf("on %s: helper %s %q", h.Name, mode, args))
}

// RunHelper runs a helper mode inside h to completion and returns its
// standard output; the error carries its standard error.
func (h *Host) RunHelper(ctx context.Context, mode string, args ...string) (string, error) {
	argv, env, err := h.helperArgv(mode, args...)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("on %s: helper %s %q: %w: %s", h.Name, mode, args, err, stderr.String())
	}
	return string(out), nil
}

// StartHelper starts a helper mode inside h as a long-running process
// (stopped when the lab closes). With waitReady it waits for the helper to
// print "ready " on its standard output.
func (h *Host) StartHelper(ctx context.Context, label, mode string, waitReady bool, args ...string) (*Process, error) {
	return h.startHelper(ctx, label, mode, waitReady, args...)
}

// startHelper starts a helper mode as a long-running process and, for
// serving modes, waits for its "ready" line.
func (h *Host) startHelper(ctx context.Context, label, mode string, waitReady bool, args ...string) (*Process, error) {
	argv, env, err := h.helperArgv(mode, args...)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", argv...)
	cmd.Env = env
	p, err := h.startCmd(label, cmd)
	if err != nil {
		return nil, err
	}
	if waitReady {
		if _, err := p.WaitOutput(ctx, 0, "ready "); err != nil {
			_ = p.Stop(time.Second)
			return nil, fmt.Errorf("on %s: helper %s: %w", h.Name, mode, err)
		}
	}
	return p, nil
}

func decodeLastLine(out []byte, result any, what string) error {
	end := len(out)
	for end > 0 && (out[end-1] == '\n' || out[end-1] == '\r') {
		end--
	}
	start := end
	for start > 0 && out[start-1] != '\n' {
		start--
	}
	if err := json.Unmarshal(out[start:end], result); err != nil {
		return fmt.Errorf("%s: decode result %q: %w", what, out[start:end], err)
	}
	return nil
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
