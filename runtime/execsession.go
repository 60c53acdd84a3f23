package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
)

// Attached exec: a command in a container with its input and output
// connected, through Docker's own exec API (create, attach, resize,
// inspect). Docker does not end an exec whose client went away, so Close
// does: a command still running when its session closes is hung up, then
// killed.

// ExecOptions is a command to run with its input and output attached.
type ExecOptions struct {
	Cmd     []string
	User    string
	WorkDir string
	Env     []string
	TTY     bool   // a terminal; the output is then one stream
	Stdin   bool   // attach the standard input
	Cols    uint16 // the terminal's first size, with TTY
	Rows    uint16
}

// ExecSession is a command running in a container with its input and
// output attached. It satisfies api.ExecSession.
type ExecSession struct {
	r           *Runtime
	execID      string
	containerID string
	container   string // the name the caller used, for errors
	tty         bool
	att         types.HijackedResponse

	closeOnce sync.Once
	closeErr  error
}

// execEndTimeout bounds how long Close waits for an exec to end.
const execEndTimeout = 10 * time.Second

// Attach starts o.Cmd in a running container of this machine and returns
// the session. ctx bounds the start; the session lasts until the command
// ends or Close.
func (r *Runtime) Attach(ctx context.Context, idOrName string, o ExecOptions) (*ExecSession, error) {
	c, err := r.inspect(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	if len(o.Cmd) == 0 {
		return nil, fmt.Errorf("%w: exec needs a command", ErrBadSpec)
	}
	if c.State == nil || !c.State.Running {
		return nil, fmt.Errorf("%w: container %q on %s is not running", ErrBadSpec, idOrName, r.cfg.MachineName)
	}
	var size *[2]uint
	if o.TTY && o.Cols > 0 && o.Rows > 0 {
		size = &[2]uint{uint(o.Rows), uint(o.Cols)}
	}
	ex, err := r.docker.ContainerExecCreate(ctx, c.ID, container.ExecOptions{
		Cmd: o.Cmd, User: o.User, WorkingDir: o.WorkDir, Env: o.Env, Tty: o.TTY, ConsoleSize: size,
		AttachStdin: o.Stdin, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return nil, fmt.Errorf("exec %q in %q on %s: %w", strings.Join(o.Cmd, " "), idOrName, r.cfg.MachineName, err)
	}
	att, err := r.docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{Tty: o.TTY, ConsoleSize: size})
	if err != nil {
		return nil, fmt.Errorf("attach to exec %q in %q on %s: %w", strings.Join(o.Cmd, " "), idOrName, r.cfg.MachineName, err)
	}
	s := &ExecSession{r: r, execID: ex.ID, containerID: c.ID, container: idOrName, tty: o.TTY, att: att}
	if size != nil {
		// Engines older than API 1.42 drop the size given at creation;
		// set it again now that the process runs.
		s.initialSize(ctx, o.Cols, o.Rows)
	}
	return s, nil
}

// initialSize sets the terminal's size, retrying briefly: the engine
// refuses a resize until the process has started.
func (s *ExecSession) initialSize(ctx context.Context, cols, rows uint16) {
	for i := range 10 {
		if s.Resize(ctx, cols, rows) == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(i+1) * 10 * time.Millisecond):
		}
	}
}

// ID is Docker's ID of the exec, for ContainerExecInspect.
func (s *ExecSession) ID() string { return s.execID }

// Input writes to the command's standard input.
func (s *ExecSession) Input(p []byte) error {
	_, err := s.att.Conn.Write(p)
	return err
}

// CloseInput ends the command's standard input.
func (s *ExecSession) CloseInput() error { return s.att.CloseWrite() }

// Resize sets the size of the command's terminal.
func (s *ExecSession) Resize(ctx context.Context, cols, rows uint16) error {
	if !s.tty {
		return nil
	}
	if err := s.r.docker.ContainerExecResize(ctx, s.execID, container.ResizeOptions{Height: uint(rows), Width: uint(cols)}); err != nil {
		return fmt.Errorf("resize the terminal of an exec in %q: %w", s.container, err)
	}
	return nil
}

// execChunk bounds one piece of output handed on.
const execChunk = 32 << 10

// Output hands out the command's output until it ends: with a TTY as it
// comes, without one taken out of Docker's multiplexed stream.
func (s *ExecSession) Output(out func(stream int, p []byte) error) error {
	var err error
	if s.tty {
		err = copyChunks(s.att.Reader, func(p []byte) error { return out(1, p) })
	} else {
		err = demuxOutput(s.att.Reader, out)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func copyChunks(r io.Reader, out func([]byte) error) error {
	buf := make([]byte, execChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if err := out(buf[:n]); err != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
	}
}

// demuxOutput reads Docker's multiplexed stream: each frame is a header
// (stream byte, three zero bytes, big-endian uint32 length) and its bytes.
// Stream 3 is the engine's own error.
func demuxOutput(r *bufio.Reader, out func(stream int, p []byte) error) error {
	var h [8]byte
	buf := make([]byte, execChunk)
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("exec output cut in a frame header: %w", err)
			}
			return err
		}
		n := int64(binary.BigEndian.Uint32(h[4:]))
		stream := int(h[0])
		if stream == 3 {
			msg, _ := io.ReadAll(io.LimitReader(r, min(n, 4096)))
			return fmt.Errorf("engine error during exec: %s", msg)
		}
		if stream != 1 && stream != 2 {
			stream = 1
		}
		for n > 0 {
			m, err := io.ReadFull(r, buf[:min(n, int64(len(buf)))])
			if m > 0 {
				if err := out(stream, buf[:m]); err != nil {
					return err
				}
			}
			if err != nil {
				return fmt.Errorf("exec output cut in a frame: %w", err)
			}
			n -= int64(m)
		}
	}
}

// Wait returns the command's exit code once its output has ended. The
// engine may still say "running" for a moment after the streams close.
func (s *ExecSession) Wait(ctx context.Context) (int, error) {
	delay := 5 * time.Millisecond
	for {
		insp, err := s.r.docker.ContainerExecInspect(ctx, s.execID)
		if err != nil {
			return 0, fmt.Errorf("exit code of an exec in %q: %w", s.container, err)
		}
		if !insp.Running {
			return insp.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("exit code of an exec in %q: %w", s.container, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// Close detaches and makes sure the command has ended: the engine keeps
// an exec running after its client left, so one still running is sent
// SIGHUP (as a closed terminal would), then SIGKILL.
func (s *ExecSession) Close() error {
	s.closeOnce.Do(func() {
		s.att.Close()
		ctx, cancel := context.WithTimeout(context.Background(), execEndTimeout)
		defer cancel()
		s.closeErr = s.r.endExec(ctx, s.execID, s.containerID)
	})
	return s.closeErr
}

// endExec waits a moment for an exec to end by itself (a shell whose
// input closed does), then signals its process.
func (r *Runtime) endExec(ctx context.Context, execID, containerID string) error {
	running := func() (int, bool, error) {
		insp, err := r.docker.ContainerExecInspect(ctx, execID)
		if err != nil {
			return 0, false, err
		}
		return insp.Pid, insp.Running, nil
	}
	steps := []struct {
		wait time.Duration
		sig  syscall.Signal
	}{{time.Second, syscall.SIGHUP}, {2 * time.Second, syscall.SIGKILL}, {3 * time.Second, 0}}
	for _, st := range steps {
		deadline := time.Now().Add(st.wait)
		for {
			pid, ok, err := running()
			if err != nil {
				return fmt.Errorf("end exec %s: %w", execID, err)
			}
			if !ok {
				return nil
			}
			if time.Now().After(deadline) {
				if st.sig == 0 {
					return fmt.Errorf("exec %s (pid %d) still runs after SIGKILL", execID, pid)
				}
				if err := signalExec(pid, containerID, st.sig); err != nil {
					return fmt.Errorf("end exec %s: %w", execID, err)
				}
				r.log.Info("ended an exec whose client went away", "exec", execID, "pid", pid, "signal", st.sig.String())
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("end exec %s: %w", execID, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// signalExec signals an exec's process by its PID as the engine sees it,
// which is this machine's when the agent and the engine share the host's
// PID namespace. The process's control group must name the container, so
// a PID from another namespace (or reused) is never signalled.
func signalExec(pid int, containerID string, sig syscall.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("the engine gives no PID for the exec")
	}
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return fmt.Errorf("PID %d is not visible here (the engine runs in another PID namespace?): %w", pid, err)
	}
	if !strings.Contains(string(cg), containerID) {
		return fmt.Errorf("PID %d is not in container %.12s here (the engine runs in another PID namespace?)", pid, containerID)
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal PID %d: %w", pid, err)
	}
	return nil
}
