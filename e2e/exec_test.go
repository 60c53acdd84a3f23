package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// ptyCLI is `uncloud` running on a lab host behind a pseudo-terminal, as
// a person at a terminal would run it.
type ptyCLI struct {
	cmd  *exec.Cmd
	ptmx *os.File

	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func startPTY(ctx context.Context, t *testing.T, c *containerLab, i int, cols, rows uint16, args ...string) *ptyCLI {
	t.Helper()
	cmd := c.hosts[i].Command(ctx, c.lab.Uncloud, args...)
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: cols, Rows: rows})
	if err != nil {
		t.Fatalf("start %v in a pty: %v", args, err)
	}
	p := &ptyCLI{cmd: cmd, ptmx: ptmx, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return // EIO once the CLI is gone
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		ptmx.Close()
	})
	return p
}

func (p *ptyCLI) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// expect waits for s on the terminal.
func (p *ptyCLI) expect(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q on the terminal within 30 s; it shows:\n%q", s, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *ptyCLI) typ(t *testing.T, s string) {
	t.Helper()
	if _, err := p.ptmx.WriteString(s); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// exitCode waits for the CLI to end and returns its exit code.
func (p *ptyCLI) exitCode(t *testing.T) int {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- p.cmd.Wait() }()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait for the CLI: %v", err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatalf("the CLI did not end; the terminal shows:\n%q", p.output())
		return -1
	}
}

// TestExecInteractive: `uncloud exec -it` from m2 into a container on m1,
// so the stream goes CLI -> m2's agent -> m1's machine API -> Docker on
// m1, driven through a pseudo-terminal: the command sees a terminal of
// the CLI's size, input echoes, a window resize reaches it, and its exit
// code is the CLI's. Then -i without -t, plain exec, and a CLI killed in
// the middle, whose command must not outlive it on m1.
func TestExecInteractive(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, noDocker)
	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "web", "-m", "m1", "--pull", "never", testimage.Tag); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	web := c.running(ctx, t, 1, "web", 1)[0]
	if web.Machine != "m1" {
		t.Fatalf("web runs on %s, want m1", web.Machine)
	}
	sh := []string{"/echoserver", "sh"}

	t.Run("-it through a pty, from the machine without the container", func(t *testing.T) {
		start := time.Now()
		p := startPTY(ctx, t, c, 1, 80, 24, append([]string{"exec", "-it", "web"}, sh...)...)
		p.expect(t, "tty=true")
		t.Logf("shell up %v after the CLI started", time.Since(start).Round(time.Millisecond))
		p.typ(t, "size\r")
		p.expect(t, "size 80x24")
		if err := pty.Setsize(p.ptmx, &pty.Winsize{Cols: 132, Rows: 43}); err != nil {
			t.Fatal(err)
		}
		p.expect(t, "winch 132x43")
		p.typ(t, "hello over the mesh\r")
		p.expect(t, "echo: hello over the mesh")
		p.typ(t, "exit 7\r")
		if code := p.exitCode(t); code != 7 {
			t.Fatalf("exit code %d, want 7; the terminal shows:\n%q", code, p.output())
		}
		if out := p.output(); strings.Contains(out, "exited with") {
			t.Errorf("with -t the CLI adds nothing to the command's words:\n%q", out)
		}
	})

	t.Run("-i without -t pipes stdin, streams stay apart", func(t *testing.T) {
		cmd := c.hosts[1].Command(ctx, c.lab.Uncloud, append([]string{"exec", "-i", "-e", "WHO=m2", "web"}, sh...)...)
		cmd.Stdin = strings.NewReader("piped line\nenv WHO\nerr to stderr\nexit 3\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit: %v, want code 3\nstdout: %s\nstderr: %s", err, &stdout, &stderr)
		}
		for _, want := range []string{"tty=false", "echo: piped line", "env WHO=m2"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("no %q on stdout:\n%s", want, &stdout)
			}
		}
		if !strings.Contains(stderr.String(), "err: to stderr") || strings.Contains(stdout.String(), "err: to stderr") ||
			!strings.Contains(stderr.String(), "exited with 3") {
			t.Errorf("stderr:\n%s\nstdout:\n%s", &stderr, &stdout)
		}
	})

	t.Run("plain exec: no input, output and exit code as before", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 1, append([]string{"exec", "web"}, sh...)...)
		if err != nil || !strings.Contains(out, "tty=false") || !strings.Contains(out, "eof") {
			t.Fatalf("exec: %v\n%s", err, out)
		}
		out, err = c.uncloud(ctx, t, 0, "exec", "web", "/echoserver", "get", "http://127.0.0.1:1/")
		if err == nil || !strings.Contains(err.Error(), "exited with 1") {
			t.Fatalf("a failing command: %v\n%s", err, out)
		}
	})

	t.Run("a CLI killed in the middle leaves nothing running on m1", func(t *testing.T) {
		p := startPTY(ctx, t, c, 1, 80, 24, append([]string{"exec", "-it", "web"}, sh...)...)
		p.expect(t, "tty=true")
		running := c.runningExecs(ctx, t, web.Name)
		if len(running) != 1 {
			t.Fatalf("%d execs run in %s, want 1", len(running), web.Name)
		}
		killed := time.Now()
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		eventuallyE2E(t, "the exec of the killed CLI to end on m1", 20*time.Second, func() error {
			if r := c.runningExecs(ctx, t, web.Name); len(r) > 0 {
				return fmt.Errorf("still running: %v", r)
			}
			return nil
		})
		t.Logf("the exec ended %v after the CLI was killed", time.Since(killed).Round(time.Millisecond))
	})
}

// runningExecs are the IDs of the execs running in a container on m1, as
// m1's Docker sees them.
func (c *containerLab) runningExecs(ctx context.Context, t *testing.T, container string) []string {
	t.Helper()
	ci, err := c.engines[0].Client.ContainerInspect(ctx, container)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, id := range ci.ExecIDs {
		insp, err := c.engines[0].Client.ContainerExecInspect(ctx, id)
		if err == nil && insp.Running {
			out = append(out, fmt.Sprintf("%.12s (pid %d)", id, insp.Pid))
		}
	}
	return out
}
