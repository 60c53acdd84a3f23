package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Attached exec on this machine: the sessions this machine's Docker runs
// for the CLI here or for another machine's (machine API, exec stream),
// bounded in number, and the engine's way to start one anywhere.

// maxExecSessions bounds the attached execs one machine runs at once: each
// holds a connection to Docker and a few goroutines.
const maxExecSessions = 64

// execSlots counts attached execs; a full channel refuses new ones.
type execSlots chan struct{}

func newExecSlots() execSlots { return make(execSlots, maxExecSessions) }

// attach starts an attached exec in a container here.
func (p *localDocker) attach(ctx context.Context, id string, o runtime.ExecOptions) (api.ExecSession, error) {
	rt, err := p.runtime()
	if err != nil {
		return nil, err
	}
	select {
	case p.execs <- struct{}{}:
	default:
		return nil, fmt.Errorf("%w: %s already runs %d attached execs", api.ErrUnavailable, p.machineName(), maxExecSessions)
	}
	s, err := rt.Attach(ctx, id, o)
	if err != nil {
		<-p.execs
		return nil, err
	}
	return &slotSession{ExecSession: s, release: func() { <-p.execs }, log: func(err error) {
		p.log.Warn("an exec may still run", "component", "runtime", "container", id, "err", err)
	}}, nil
}

// slotSession gives its slot back when it closes (once: the stream's
// reader and its writer both close it).
type slotSession struct {
	*runtime.ExecSession
	release func()
	log     func(error)
	once    sync.Once
}

func (s *slotSession) Close() error {
	err := s.ExecSession.Close()
	s.once.Do(func() {
		if err != nil {
			s.log(err)
		}
		s.release()
	})
	return err
}

// handleExecAttach serves the exec stream for a container here to another
// machine: POST .../{id}/exec asking for the upgrade.
func (p *localDocker) handleExecAttach(w http.ResponseWriter, r *http.Request) {
	var req api.ContainerExecRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeRuntimeError(w, fmt.Errorf("%w: %v", runtime.ErrBadSpec, err))
		return
	}
	s, err := p.attach(r.Context(), r.PathValue("id"), execOptions(req.Cmd, req.ExecOptions))
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	target := api.ExecTarget{Container: r.PathValue("id"), Machine: p.machineName()}
	if err := api.UpgradeExec(r.Context(), w, r, target, s, api.ExecTiming{}); err != nil {
		p.log.Debug("exec stream ended", "component", "runtime", "container", target.Container, "err", err)
	}
}

func execOptions(cmd []string, o api.ExecOptions) runtime.ExecOptions {
	return runtime.ExecOptions{Cmd: cmd, User: o.User, WorkDir: o.WorkDir, Env: o.Env, TTY: o.TTY, Stdin: o.Stdin,
		Cols: o.Cols, Rows: o.Rows}
}

// Attach implements orchestrate.Engine: here through the runtime, on
// another machine through its machine API's exec stream.
func (e engine) Attach(ctx context.Context, m orchestrate.Machine, id string, cmd []string, o api.ExecOptions) (api.ExecSession, error) {
	if local(m) {
		return e.d.containers.attach(ctx, id, execOptions(cmd, o))
	}
	s, err := e.d.machineAPI.ExecAttach(ctx, m.ID, id, api.ContainerExecRequest{Cmd: cmd, ExecOptions: o})
	if err != nil {
		return nil, remoteCallErr(m, err)
	}
	return s, nil
}
