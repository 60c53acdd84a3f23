package main

import (
	"context"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// shortCommand bounds a command that asks the agent one quick question.
const shortCommand = 30 * time.Second

// longCommand bounds commands that create or remove many containers; each
// container's own call is bounded by the agent.
const longCommand = 30 * time.Minute

// agentCall connects to the agent (--connect, else a context: g.client), makes one typed local API
// call bounded by timeout, and lets go of the connection.
func agentCall[T any](g *globals, timeout time.Duration, call func(context.Context, *api.Client) (T, error)) (T, error) {
	client, ctx, release, err := agentFor(g, timeout)
	if err != nil {
		var zero T
		return zero, err
	}
	defer release()
	return call(ctx, client)
}

// agentShow makes one agentCall and prints its answer: as indented JSON
// when output is "json", else with render. It is the whole of a command
// that shows one answer of the agent.
func agentShow[T any](g *globals, timeout time.Duration, output string, call func(context.Context, *api.Client) (T, error),
	render func(T) error) error {
	v, err := agentCall(g, timeout, call)
	if err != nil {
		return err
	}
	if output == "json" {
		return printJSON(v)
	}
	return render(v)
}

// agentFor connects to the agent (g.client) for one command bounded by
// timeout; release frees both.
func agentFor(g *globals, timeout time.Duration) (*api.Client, context.Context, func(), error) {
	client, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	return client, ctx, func() { cancel(); client.Close() }, nil
}

// selfView is what a command that acts on this machine among the others
// reads first: the agent's own status and its machine list.
type selfView struct {
	self     api.Status
	machines []api.MachineInfo
}

// readSelfView asks the agent for both in one connection.
func readSelfView(g *globals) (selfView, error) {
	return agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (selfView, error) {
		st, err := a.Status(ctx)
		if err != nil {
			return selfView{}, err
		}
		ms, err := a.Machines(ctx)
		return selfView{st, ms}, err
	})
}
