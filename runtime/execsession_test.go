package runtime

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// output gathers an exec's output by stream.
type output struct {
	mu  sync.Mutex
	std [3]bytes.Buffer
}

func (o *output) out(stream int, p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.std[stream].Write(p)
	return nil
}

func (o *output) has(stream int, s string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Contains(o.std[stream].String(), s)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return "stdout: " + o.std[1].String() + "\nstderr: " + o.std[2].String()
}

func waitOutput(t *testing.T, o *output, stream int, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !o.has(stream, s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q on stream %d:\n%s", s, stream, o)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDockerAttachedExec runs the test image's tiny shell through Docker's
// exec API: a terminal that the command sees, its size at the start and
// after a resize, input, options, separate streams without a TTY, and the
// exit code.
func TestDockerAttachedExec(t *testing.T) {
	rt := newTestRuntime(t, "attach")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := rt.Create(ctx, ContainerSpec{Service: "web", Image: testimage.Tag})
	if err != nil {
		t.Fatal(err)
	}
	sh := []string{"/echoserver", "sh"}

	t.Run("tty", func(t *testing.T) {
		s, err := rt.Attach(ctx, c.Name, ExecOptions{Cmd: sh, TTY: true, Stdin: true, Cols: 81, Rows: 25})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var o output
		done := make(chan error, 1)
		go func() { done <- s.Output(o.out) }()
		waitOutput(t, &o, 1, "tty=true")
		s.Input([]byte("size\r"))
		waitOutput(t, &o, 1, "size 81x25")
		if err := s.Resize(ctx, 120, 40); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, &o, 1, "winch 120x40")
		s.Input([]byte("hello\r"))
		waitOutput(t, &o, 1, "echo: hello")
		s.Input([]byte("exit 5\r"))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if code, err := s.Wait(ctx); err != nil || code != 5 {
			t.Fatalf("exit code %d, %v; want 5", code, err)
		}
	})

	t.Run("stdin without tty", func(t *testing.T) {
		s, err := rt.Attach(ctx, c.Name, ExecOptions{Cmd: sh, Stdin: true, User: "1234", WorkDir: "/etc", Env: []string{"GREETING=hi there"}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var o output
		done := make(chan error, 1)
		go func() { done <- s.Output(o.out) }()
		s.Input([]byte("id\npwd\nenv GREETING\nerr oops\n"))
		s.CloseInput()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if code, err := s.Wait(ctx); err != nil || code != 0 {
			t.Fatalf("exit code %d, %v; want 0", code, err)
		}
		for _, want := range []string{"tty=false size=none", "uid 1234", "pwd /etc", "env GREETING=hi there", "eof"} {
			if !o.has(1, want) {
				t.Errorf("no %q in the output:\n%s", want, &o)
			}
		}
		if !o.has(2, "err: oops") || o.has(1, "err: oops") {
			t.Errorf("stderr is not apart:\n%s", &o)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		if _, err := rt.Attach(ctx, c.Name, ExecOptions{}); err == nil {
			t.Error("an exec without a command was started")
		}
		if _, err := rt.Attach(ctx, "no-such", ExecOptions{Cmd: sh}); err == nil {
			t.Error("an exec in a missing container was started")
		}
	})

	// A client that goes away must not leave its command running, even
	// one that never reads its input (a server) and so would not notice.
	for _, tc := range []struct {
		name string
		o    ExecOptions
	}{
		{"close ends a shell", ExecOptions{Cmd: sh, TTY: true, Stdin: true}},
		{"close ends a server", ExecOptions{Cmd: []string{"/echoserver"}, Env: []string{"PORT=9191"}}},
		{"close ends a server with a tty", ExecOptions{Cmd: []string{"/echoserver"}, TTY: true, Stdin: true, Env: []string{"PORT=9192"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := rt.Attach(ctx, c.Name, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // it runs
			insp, err := rt.docker.ContainerExecInspect(ctx, s.ID())
			if err != nil || !insp.Running {
				t.Fatalf("the exec is not running before the close: %+v %v", insp, err)
			}
			start := time.Now()
			if err := s.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			insp, err = rt.docker.ContainerExecInspect(ctx, s.ID())
			if err != nil || insp.Running {
				t.Fatalf("the exec runs on after its session closed: %+v %v", insp, err)
			}
			t.Logf("ended %v after the close (exit code %d)", time.Since(start).Round(time.Millisecond), insp.ExitCode)
		})
	}
}
