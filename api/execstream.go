package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// An exec with its input and output attached: the session both ends of
// an exec stream share (ExecSession), the side that runs it (ServeExec)
// and the side that drives it (execStream, which is itself a session, so
// an agent relays a stream to another machine by serving one session
// with the other).

// ExecOptions are how a command is run in a container, beyond the
// command itself; Docker's exec options of the same names.
type ExecOptions struct {
	User    string   `json:"user,omitempty"`
	WorkDir string   `json:"workdir,omitempty"`
	Env     []string `json:"env,omitempty"`
	// TTY gives the command a terminal; its output is then one stream.
	TTY bool `json:"tty,omitempty"`
	// Stdin attaches the command's standard input; without it the
	// command reads end of file at once.
	Stdin bool `json:"stdin,omitempty"`
	// Cols and Rows are the terminal's first size (with TTY).
	Cols uint16 `json:"cols,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
}

// ExecTarget is the container an exec runs in.
type ExecTarget struct {
	Container string `json:"container"`
	Machine   string `json:"machine"`
}

// ExecSession is a command running in a container with its input and
// output attached. Output and Wait are called by one goroutine, the input
// calls by another.
type ExecSession interface {
	// Input writes to the command's standard input.
	Input(p []byte) error
	// CloseInput ends its input (the command reads end of file).
	CloseInput() error
	// Resize sets the size of the command's terminal.
	Resize(ctx context.Context, cols, rows uint16) error
	// Output hands out each piece of the command's output (stream 1:
	// standard output, or everything with a TTY; 2: standard error) until
	// the output ends. An error from out ends it and comes back.
	Output(out func(stream int, p []byte) error) error
	// Wait returns the command's exit code once its output has ended.
	Wait(ctx context.Context) (int, error)
	// Close ends the session; a command still running is ended too.
	// It may be called more than once, and while Output runs.
	Close() error
}

// resizeTimeout bounds one resize call.
const resizeTimeout = 10 * time.Second

// exitLinger is how long the serving side waits, after the last frame,
// for the other side to close (so the last frame is read, not reset).
const exitLinger = 5 * time.Second

// ServeExec runs the exec stream on a connection (r reads it, w writes it
// and closes it) for session s: input from the other side goes to the
// command, its output and then its exit code go back. It returns when the
// command's output has ended and its exit code was sent, or when the
// other side went away (then the command is ended: s.Close), or when ctx
// ends. s is closed when it returns.
func ServeExec(ctx context.Context, r io.Reader, w io.WriteCloser, s ExecSession, t ExecTiming) error {
	fc := newFrameConn(r, w, w, t)
	defer fc.Close()
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
			fc.Close() // unblocks the reads and writes below
		case <-fc.closed:
		}
	}()
	stopPing := fc.keepalive()
	defer stopPing()

	var finished atomic.Bool // the exit code (or error) was sent
	inputDone := make(chan error, 1)
	go func() {
		inputOpen := true
		err := fc.readLoop(func(kind byte, p []byte) error {
			switch kind {
			case FrameStdin:
				if inputOpen && s.Input(p) != nil {
					// The command closed its input (or ended): what is
					// typed now has nowhere to go, which is not an error.
					inputOpen = false
				}
			case FrameStdinEOF:
				if inputOpen {
					inputOpen = false
					s.CloseInput()
				}
			case FrameResize:
				cols, rows, err := parseResize(p)
				if err != nil {
					return err
				}
				rctx, rcancel := context.WithTimeout(ctx, resizeTimeout)
				s.Resize(rctx, cols, rows) // a failed resize is not worth ending the exec
				rcancel()
			case FramePing:
			default:
				return fmt.Errorf("exec stream: unknown frame kind %d from the client", kind)
			}
			return nil
		})
		if !finished.Load() {
			// The other side went away (or broke the protocol) before
			// the command ended: end it, which also ends Output below.
			cancel()
			s.Close()
		}
		inputDone <- err
	}()

	var connErr error // writing to the other side failed
	outErr := s.Output(func(stream int, p []byte) error {
		kind := FrameStdout
		if stream == 2 {
			kind = FrameStderr
		}
		if err := fc.writeData(kind, p); err != nil {
			connErr = err
			return err
		}
		return nil
	})
	code, err := 0, outErr
	if err == nil {
		code, err = s.Wait(ctx)
	}
	if connErr != nil || ctx.Err() != nil {
		// The other side is gone: nobody to tell, and the command must
		// not outlive it.
		cancel()
		s.Close()
		if connErr == nil {
			connErr = <-inputDone
		}
		if connErr != nil {
			return fmt.Errorf("exec ended: the client went away: %w", connErr)
		}
		return errors.New("exec ended: the client went away")
	}
	stopPing()
	finished.Store(true)
	if err != nil {
		fc.write(FrameError, []byte(truncate(err.Error(), maxFramePayload)))
	} else {
		fc.write(FrameExit, exitPayload(code))
	}
	fc.closeWrite()
	select {
	case <-inputDone:
	case <-time.After(exitLinger):
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// execStream drives an exec served by ServeExec on the other side of a
// connection. It is an ExecSession, so a relay serves it as is.
type execStream struct {
	fc       *frameConn
	stopPing func()
	peer     string // who serves it, for errors

	mu   sync.Mutex
	done bool  // an exit frame came
	code int   // its code
	err  error // why the stream ended without one
}

// newExecStream starts driving the exec on rwc (already upgraded).
func newExecStream(rwc io.ReadWriteCloser, peer string, t ExecTiming) *execStream {
	fc := newFrameConn(rwc, rwc, rwc, t)
	return &execStream{fc: fc, stopPing: fc.keepalive(), peer: peer}
}

func (e *execStream) Input(p []byte) error { return e.fc.writeData(FrameStdin, p) }

func (e *execStream) CloseInput() error { return e.fc.write(FrameStdinEOF, nil) }

func (e *execStream) Resize(_ context.Context, cols, rows uint16) error {
	return e.fc.write(FrameResize, resizePayload(cols, rows))
}

// Output reads the stream until the exit code or an error comes.
func (e *execStream) Output(out func(stream int, p []byte) error) error {
	var ownErr error
	err := e.fc.readLoop(func(kind byte, p []byte) error {
		switch kind {
		case FrameStdout, FrameStderr:
			if err := out(int(kind), p); err != nil {
				ownErr = err
				return err
			}
		case FramePing:
		case FrameExit:
			code, err := parseExit(p)
			if err != nil {
				return err
			}
			e.mu.Lock()
			e.done, e.code = true, code
			e.mu.Unlock()
			return errStopReading
		case FrameError:
			e.mu.Lock()
			e.err = fmt.Errorf("exec on %s: %s", e.peer, p)
			e.mu.Unlock()
			return errStopReading
		default:
			return fmt.Errorf("exec stream: unknown frame kind %d from %s", kind, e.peer)
		}
		return nil
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case ownErr != nil:
		e.err = ownErr
	case err != nil:
		e.err = fmt.Errorf("exec stream from %s broke: %w", e.peer, err)
	case !e.done && e.err == nil:
		e.err = fmt.Errorf("exec stream from %s ended without an exit code", e.peer)
	}
	if e.done {
		return nil
	}
	return e.err
}

// Wait returns the exit code that ended the output.
func (e *execStream) Wait(context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done {
		return e.code, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	return 0, errors.New("exec stream: Wait before the output ended")
}

func (e *execStream) Close() error {
	e.stopPing()
	return e.fc.Close()
}

var _ ExecSession = (*execStream)(nil)
