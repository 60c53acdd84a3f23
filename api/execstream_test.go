package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoSession is a command for the stream tests: it answers each input
// with "echo: <input>" on stdout, says resizes as "size CxR" on stderr,
// ends with code N on input "exit N", and records how it ended.
type echoSession struct {
	out   chan string
	end   chan struct{}
	done  chan struct{}
	once  sync.Once
	eonce sync.Once

	mu        sync.Mutex
	code      int
	inputEOF  bool
	closed    bool
	blockNext time.Duration // the next Input blocks this long (a command that does not read)
}

func newEchoSession() *echoSession {
	return &echoSession{out: make(chan string, 16), end: make(chan struct{}), done: make(chan struct{})}
}

func (s *echoSession) Input(p []byte) error {
	s.mu.Lock()
	block := s.blockNext
	s.blockNext = 0
	s.mu.Unlock()
	if block > 0 {
		select {
		case <-time.After(block):
		case <-s.done:
		}
	}
	in := string(p)
	if n, ok := strings.CutPrefix(in, "exit "); ok {
		code, _ := strconv.Atoi(strings.TrimSpace(n))
		s.mu.Lock()
		s.code = code
		s.mu.Unlock()
		s.eonce.Do(func() { close(s.end) })
		return nil
	}
	select {
	case s.out <- "1echo: " + in:
	case <-s.done:
		return errors.New("closed")
	}
	return nil
}

func (s *echoSession) CloseInput() error {
	s.mu.Lock()
	s.inputEOF = true
	s.mu.Unlock()
	s.eonce.Do(func() { close(s.end) })
	return nil
}

func (s *echoSession) Resize(_ context.Context, cols, rows uint16) error {
	select {
	case s.out <- fmt.Sprintf("2size %dx%d", cols, rows):
	case <-s.done:
	}
	return nil
}

func (s *echoSession) Output(out func(int, []byte) error) error {
	for {
		select {
		case o := <-s.out:
			if err := out(int(o[0]-'0'), []byte(o[1:])); err != nil {
				return err
			}
		case <-s.end:
			return nil
		case <-s.done:
			return errors.New("session closed")
		}
	}
}

func (s *echoSession) Wait(context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, nil
}

func (s *echoSession) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
	})
	return nil
}

func (s *echoSession) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// pipeConn is one end of a unix socket pair (a real connection, which
// can half-close like the hijacked ones can).
func socketPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	client, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-got
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// collect gathers a stream's output by stream, safely for the test.
type collect struct {
	mu  sync.Mutex
	std [3]bytes.Buffer
}

func (c *collect) out(stream int, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.std[stream].Write(p)
	return nil
}

func (c *collect) get(stream int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.std[stream].String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	f := newFrameConn(&buf, &buf, io.NopCloser(nil), ExecTiming{})
	big := bytes.Repeat([]byte("x"), maxFramePayload+10)
	if err := f.writeData(FrameStdout, big); err != nil {
		t.Fatal(err)
	}
	f.write(FrameResize, resizePayload(132, 43))
	f.write(FrameExit, exitPayload(-2))
	var kinds []byte
	var total int
	var cols, rows uint16
	var code int
	err := f.readLoop(func(kind byte, p []byte) error {
		kinds = append(kinds, kind)
		switch kind {
		case FrameStdout:
			total += len(p)
		case FrameResize:
			cols, rows, _ = parseResize(p)
		case FrameExit:
			code, _ = parseExit(p)
		}
		return nil
	})
	if err != io.EOF || !bytes.Equal(kinds, []byte{FrameStdout, FrameStdout, FrameResize, FrameExit}) || total != len(big) ||
		cols != 132 || rows != 43 || code != -2 {
		t.Fatalf("frames: %v %v total=%d size=%dx%d code=%d", err, kinds, total, cols, rows, code)
	}
	if err := f.write(FrameStdin, big); err == nil {
		t.Error("a frame over the limit was written")
	}

	// A peer that announces more than the limit is refused before
	// anything is allocated for it.
	buf.Reset()
	buf.Write([]byte{FrameStdin, 0x7f, 0xff, 0xff, 0xff})
	if err := f.readLoop(func(byte, []byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "over the") {
		t.Errorf("an oversized frame: %v", err)
	}
	buf.Reset()
	buf.Write([]byte{FrameStdin, 0, 0, 0, 9, 'a'})
	if err := f.readLoop(func(byte, []byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "middle of a frame") {
		t.Errorf("a cut frame: %v", err)
	}
	if _, _, err := parseResize([]byte{1, 2, 3}); err == nil {
		t.Error("a short resize frame was accepted")
	}
}

// TestServeExec drives a session through a real connection: input echoes,
// a resize reaches the command, stderr stays apart, the exit code comes
// back, and the session is closed at the end.
func TestServeExec(t *testing.T) {
	server, client := socketPair(t)
	s := newEchoSession()
	served := make(chan error, 1)
	go func() { served <- ServeExec(context.Background(), server, server, s, ExecTiming{}) }()

	cl := newExecStream(client, "test server", ExecTiming{})
	defer cl.Close()
	var got collect
	outDone := make(chan error, 1)
	go func() { outDone <- cl.Output(got.out) }()
	cl.Input([]byte("hello"))
	waitFor(t, "the echo", func() bool { return got.get(1) == "echo: hello" })
	cl.Resize(context.Background(), 100, 40)
	waitFor(t, "the resize", func() bool { return got.get(2) == "size 100x40" })
	cl.Input([]byte("exit 7"))
	if err := <-outDone; err != nil {
		t.Fatalf("output: %v", err)
	}
	if code, err := cl.Wait(context.Background()); err != nil || code != 7 {
		t.Fatalf("exit code %d, %v; want 7", code, err)
	}
	cl.Close()
	if err := <-served; err != nil {
		t.Errorf("ServeExec: %v", err)
	}
	if !s.isClosed() {
		t.Error("the session is still open after the exec ended")
	}
}

// TestServeExecInputEOF: end of input reaches the command (which exits).
func TestServeExecInputEOF(t *testing.T) {
	server, client := socketPair(t)
	s := newEchoSession()
	go ServeExec(context.Background(), server, server, s, ExecTiming{})
	cl := newExecStream(client, "test server", ExecTiming{})
	defer cl.Close()
	cl.CloseInput()
	if err := cl.Output(func(int, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inputEOF {
		t.Error("end of input did not reach the command")
	}
}

// TestServeExecClientGone: a client that closes its connection in the
// middle ends the command at once.
func TestServeExecClientGone(t *testing.T) {
	server, client := socketPair(t)
	s := newEchoSession()
	served := make(chan error, 1)
	go func() { served <- ServeExec(context.Background(), server, server, s, ExecTiming{}) }()
	cl := newExecStream(client, "test server", ExecTiming{})
	cl.Input([]byte("hi"))
	client.Close()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "went away") {
			t.Errorf("ServeExec: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeExec still runs after its client closed")
	}
	if !s.isClosed() {
		t.Error("the command was not ended")
	}
}

// TestServeExecSilentClient: a client that stops answering without
// closing (a machine that vanished) is taken for gone after Idle.
func TestServeExecSilentClient(t *testing.T) {
	server, client := socketPair(t)
	go io.Copy(io.Discard, client) // reads, never writes: no pings
	s := newEchoSession()
	timing := ExecTiming{Ping: 20 * time.Millisecond, Idle: 150 * time.Millisecond}
	served := make(chan error, 1)
	start := time.Now()
	go func() { served <- ServeExec(context.Background(), server, server, s, timing) }()
	select {
	case err := <-served:
		if took := time.Since(start); took < timing.Idle || err == nil || !strings.Contains(err.Error(), "nothing heard") {
			t.Errorf("ServeExec ended after %v: %v", took, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeExec still runs with a silent client")
	}
	if !s.isClosed() {
		t.Error("the command was not ended")
	}
}

// TestServeExecBusyIsNotSilent: while the command does not take its input
// (so the server stops reading), the client's silence does not count;
// pings keep an idle but live stream open well past Idle.
func TestServeExecBusyIsNotSilent(t *testing.T) {
	server, client := socketPair(t)
	s := newEchoSession()
	timing := ExecTiming{Ping: 20 * time.Millisecond, Idle: 150 * time.Millisecond}
	served := make(chan error, 1)
	go func() { served <- ServeExec(context.Background(), server, server, s, timing) }()
	cl := newExecStream(client, "test server", timing)
	defer cl.Close()
	var got collect
	outDone := make(chan error, 1)
	go func() { outDone <- cl.Output(got.out) }()

	s.mu.Lock()
	s.blockNext = 4 * timing.Idle
	s.mu.Unlock()
	cl.Input([]byte("slow"))
	time.Sleep(5 * timing.Idle) // blocked, then idle with pings only
	if s.isClosed() {
		t.Fatal("a live stream was ended")
	}
	waitFor(t, "the late echo", func() bool { return got.get(1) == "echo: slow" })
	cl.Input([]byte("exit 0"))
	if err := <-outDone; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeExec: %v", err)
	}
}

// TestExecStreamServerGone: the driving side learns that the server went
// away without an exit code, and says so.
func TestExecStreamServerGone(t *testing.T) {
	server, client := socketPair(t)
	cl := newExecStream(client, "machine m2", ExecTiming{})
	defer cl.Close()
	go func() {
		f := newFrameConn(server, server, server, ExecTiming{})
		f.write(FrameStdout, []byte("partial"))
		server.Close()
	}()
	var got collect
	err := cl.Output(got.out)
	if err == nil || !strings.Contains(err.Error(), "machine m2") || got.get(1) != "partial" {
		t.Fatalf("output %q: %v", got.get(1), err)
	}
	if _, err := cl.Wait(context.Background()); err == nil {
		t.Error("Wait gave an exit code for a stream that had none")
	}

	// An error frame is said as the server said it.
	server2, client2 := socketPair(t)
	cl2 := newExecStream(client2, "machine m3", ExecTiming{})
	defer cl2.Close()
	go func() {
		f := newFrameConn(server2, server2, server2, ExecTiming{})
		f.write(FrameError, []byte("no such user: bob"))
	}()
	if err := cl2.Output(got.out); err == nil || err.Error() != "exec on machine m3: no such user: bob" {
		t.Fatalf("error frame: %v", err)
	}
}
