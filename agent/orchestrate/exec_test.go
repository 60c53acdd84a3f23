package orchestrate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

// fakeSession is an attached exec that prints where it ran and exits 3.
type fakeSession struct {
	machine string
	opts    api.ExecOptions
	closed  bool
}

func (s *fakeSession) Input([]byte) error                           { return nil }
func (s *fakeSession) CloseInput() error                            { return nil }
func (s *fakeSession) Resize(context.Context, uint16, uint16) error { return nil }
func (s *fakeSession) Wait(context.Context) (int, error)            { return 3, nil }
func (s *fakeSession) Close() error                                 { s.closed = true; return nil }
func (s *fakeSession) Output(out func(int, []byte) error) error {
	return out(1, []byte("on "+s.machine))
}

func (e *fakeEngine) Attach(_ context.Context, m Machine, id string, cmd []string, o api.ExecOptions) (api.ExecSession, error) {
	if err := e.record("attach", m, id, strings.Join(cmd, " ")); err != nil {
		return nil, err
	}
	return &fakeSession{machine: m.Name, opts: o}, nil
}

func TestExecAttachPicksTheContainer(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 3, Machines: []string{"m1", "m2", "m3"}})
	sh := []string{"sh"}

	s, target, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, ExecOptions: api.ExecOptions{TTY: true, Stdin: true, Cols: 80, Rows: 24}})
	if err != nil || target.Machine != "m1" || !strings.HasPrefix(target.Container, "web-") {
		t.Fatalf("attach picks this machine's container: %v %+v", err, target)
	}
	if fs := s.(*fakeSession); !fs.opts.TTY || fs.opts.Cols != 80 || fs.opts.Rows != 24 {
		t.Errorf("the options reach the engine: %+v", fs.opts)
	}

	_, target, err = r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, Machine: "m3"})
	if err != nil || target.Machine != "m3" {
		t.Fatalf("-m m3: %v %+v", err, target)
	}
	_, target, err = r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, Machine: "id-m2"})
	if err != nil || target.Machine != "m2" {
		t.Fatalf("-m by ID: %v %+v", err, target)
	}
	m2 := target.Container
	_, target, err = r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, Container: m2})
	if err != nil || target.Machine != "m2" || target.Container != m2 {
		t.Fatalf("--container %s: %v %+v", m2, err, target)
	}
	if _, _, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, Container: m2, Machine: "m3"}); !errors.Is(err, api.ErrNotFound) ||
		!strings.Contains(err.Error(), "on m3") {
		t.Errorf("a container that is not on the machine named: %v", err)
	}
	if _, _, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, Machine: "m9"}); !errors.Is(err, api.ErrNotFound) ||
		!strings.Contains(err.Error(), `no machine "m9"`) {
		t.Errorf("an unknown machine: %v", err)
	}
	if _, _, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("no command: %v", err)
	}

	// A machine that is down is not picked by default, and refused when
	// named: at once, with no call to it.
	before := len(r.engine.ops("attach"))
	r.fleet.set("m3", "down")
	if _, _, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh, Machine: "m3"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("-m of a machine that is down: %v", err)
	}
	r.fleet.set("m1", "down") // as a CLI on another machine would see it
	for range 5 {
		if _, target, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh}); err != nil || target.Machine != "m2" {
			t.Fatalf("the only reachable replica: %v %+v", err, target)
		}
	}
	for _, c := range r.engine.ops("attach")[before:] {
		if !strings.HasPrefix(c, "attach m2 ") {
			t.Errorf("a call to a machine that is down: %s", c)
		}
	}
	r.engine.setFail("attach m2", errors.New("m2 says no"))
	if _, _, err := r.o.ExecAttach(ctx, "web", api.ExecRequest{Cmd: sh}); err == nil || !strings.Contains(err.Error(), "m2 says no") {
		t.Errorf("the engine's refusal: %v", err)
	}
}
