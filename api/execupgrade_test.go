package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// execAgent is a local API backend whose ExecAttach relays to a "machine"
// (another HTTP server serving the exec stream), as an agent does for a
// container on another machine.
type execAgent struct {
	fakeAgent
	machine *MachineClient
	got     ExecRequest
}

func (a *execAgent) ExecAttach(ctx context.Context, name string, req ExecRequest) (ExecSession, ExecTarget, error) {
	a.got = req
	if name != "web" {
		return nil, ExecTarget{}, fmt.Errorf("%w: no service %q", ErrNotFound, name)
	}
	s, err := a.machine.ExecAttach(ctx, "m2", "web-1", ContainerExecRequest{Cmd: req.Cmd, ExecOptions: req.ExecOptions})
	if err != nil {
		return nil, ExecTarget{}, err
	}
	return s, ExecTarget{Container: "web-1", Machine: "m2"}, nil
}

// machineServer serves the exec stream of echo sessions on plain HTTP/1.1
// (the machine API's mutual TLS changes nothing here) and keeps them.
type machineServer struct {
	mu       sync.Mutex
	sessions []*echoSession
	reqs     []ContainerExecRequest
}

func (m *machineServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+MachinePathRuntimeContainers+"/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		var req ContainerExecRequest
		if err := decodeBody(r, &req); err != nil || !IsExecUpgrade(r) {
			http.Error(w, "want an exec upgrade", http.StatusBadRequest)
			return
		}
		if req.User == "nobody" {
			http.Error(w, "unable to find user nobody", http.StatusBadRequest)
			return
		}
		s := newEchoSession()
		m.mu.Lock()
		m.sessions = append(m.sessions, s)
		m.reqs = append(m.reqs, req)
		m.mu.Unlock()
		UpgradeExec(r.Context(), w, r, ExecTarget{Container: r.PathValue("id"), Machine: "m2"}, s, ExecTiming{})
	})
	return mux
}

func (m *machineServer) last() (*echoSession, ContainerExecRequest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[len(m.sessions)-1], m.reqs[len(m.reqs)-1]
}

// unixClient is a local API client on a real unix socket serving h.
func unixClient(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := t.TempDir() + "/agent.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := NewClient(sock, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newExecRig(t *testing.T) (*Client, *execAgent, *machineServer) {
	t.Helper()
	m := &machineServer{}
	msrv := httptest.NewServer(m.handler())
	t.Cleanup(msrv.Close)
	a := &execAgent{machine: NewMachineClient(msrv.Client(), func(string) (string, error) { return msrv.URL, nil })}
	return unixClient(t, NewLocalHandler(a)), a, m
}

// TestExecAttachRelayed: CLI -> local API (unix socket) -> machine API ->
// the command, both ways, with the options, the target, a resize and the
// exit code arriving where they should.
func TestExecAttachRelayed(t *testing.T) {
	c, a, m := newExecRig(t)
	ctx := context.Background()
	req := ExecRequest{Cmd: []string{"sh"}, Machine: "m2",
		ExecOptions: ExecOptions{TTY: true, Stdin: true, Cols: 80, Rows: 24, User: "app", WorkDir: "/srv", Env: []string{"A=1"}}}
	s, target, err := c.ExecAttach(ctx, "web", req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if target != (ExecTarget{Container: "web-1", Machine: "m2"}) {
		t.Errorf("target %+v", target)
	}
	if a.got.Machine != "m2" || a.got.User != "app" {
		t.Errorf("the agent got %+v", a.got)
	}
	_, mreq := m.last()
	if !mreq.TTY || !mreq.Stdin || mreq.Cols != 80 || mreq.Rows != 24 || mreq.WorkDir != "/srv" || mreq.Env[0] != "A=1" || mreq.Cmd[0] != "sh" {
		t.Errorf("the machine got %+v", mreq)
	}
	var got collect
	done := make(chan error, 1)
	go func() { done <- s.Output(got.out) }()
	s.Input([]byte("ping"))
	waitFor(t, "the echo through two hops", func() bool { return got.get(1) == "echo: ping" })
	s.Resize(ctx, 120, 50)
	waitFor(t, "the resize through two hops", func() bool { return got.get(2) == "size 120x50" })
	s.Input([]byte("exit 42"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code, err := s.Wait(ctx); code != 42 || err != nil {
		t.Fatalf("exit code %d %v, want 42", code, err)
	}
}

// TestExecAttachCLIGone: when the CLI's connection drops, the relay drops
// the machine's, and the machine ends the command.
func TestExecAttachCLIGone(t *testing.T) {
	c, _, m := newExecRig(t)
	s, _, err := c.ExecAttach(context.Background(), "web", ExecRequest{Cmd: []string{"sleep"}, ExecOptions: ExecOptions{Stdin: true}})
	if err != nil {
		t.Fatal(err)
	}
	var got collect
	go s.Output(got.out)
	s.Input([]byte("x"))
	waitFor(t, "the echo", func() bool { return got.get(1) == "echo: x" })
	s.Close()
	ms, _ := m.last()
	waitFor(t, "the command to be ended on the machine", ms.isClosed)
}

// TestExecAttachRefusals: errors before the stream are ordinary answers,
// and an agent that does not know the stream is told apart.
func TestExecAttachRefusals(t *testing.T) {
	c, _, _ := newExecRig(t)
	ctx := context.Background()
	if _, _, err := c.ExecAttach(ctx, "nope", ExecRequest{Cmd: []string{"sh"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown service: %v", err)
	}
	_, _, err := c.ExecAttach(ctx, "web", ExecRequest{Cmd: []string{"sh"}, ExecOptions: ExecOptions{User: "nobody"}})
	if err == nil || !strings.Contains(err.Error(), "unable to find user nobody") {
		t.Errorf("the machine's refusal: %v", err)
	}

	// An older agent answers the plain exec call.
	old := unixClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply(w, ExecResult{Stdout: "ran"}, nil)
	}))
	if _, _, err := old.ExecAttach(ctx, "web", ExecRequest{Cmd: []string{"sh"}}); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Errorf("an old agent: %v", err)
	}
}

// TestExecPlainStillWorks: the plain exec call (no upgrade) keeps its
// JSON answer on the same path.
func TestExecPlainStillWorks(t *testing.T) {
	a := &plainExecAgent{}
	c := unixClient(t, NewLocalHandler(a))
	res, err := c.ExecService(context.Background(), "web", ExecRequest{Cmd: []string{"true"}})
	if err != nil || res.Stdout != "plain" {
		t.Fatalf("%+v %v", res, err)
	}
}

type plainExecAgent struct{ execAgent }

func (p *plainExecAgent) ExecService(context.Context, string, ExecRequest) (ExecResult, error) {
	return ExecResult{Stdout: "plain"}, nil
}

func TestIsExecUpgrade(t *testing.T) {
	for _, tc := range []struct {
		conn, upgrade string
		want          bool
	}{
		{"Upgrade", ExecUpgradeProtocol, true},
		{"keep-alive, upgrade", "UNCLOUD-EXEC/1", true},
		{"keep-alive", ExecUpgradeProtocol, false},
		{"Upgrade", "websocket", false},
	} {
		r, _ := http.NewRequest("POST", "/", nil)
		r.Header.Set("Connection", tc.conn)
		r.Header.Set("Upgrade", tc.upgrade)
		if got := IsExecUpgrade(r); got != tc.want {
			t.Errorf("Connection %q Upgrade %q: %v", tc.conn, tc.upgrade, got)
		}
	}
	if headerValue("a\r\nX-Evil: 1") != "aX-Evil: 1" {
		t.Error("a name could break the header block")
	}
}
