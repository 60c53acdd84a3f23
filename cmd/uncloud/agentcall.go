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
