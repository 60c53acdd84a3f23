package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// planMove prints where each of the machine's replicas would go, and
// refuses (before anything is asked or changed) when a service cannot move.
func (c leaveCmd) planMove(g *globals, machineID string) error {
	plan, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.EvacuateResult, error) {
		return a.Evacuate(ctx, api.EvacuateRequest{Machine: machineID, DryRun: true})
	})
	if err != nil {
		return fmt.Errorf("plan the move of this machine's replicas: %w", err)
	}
	if len(plan.Moves) == 0 && len(plan.Refused) == 0 {
		fmt.Println("  move: no replica of a service runs here")
	}
	for _, m := range plan.Moves {
		fmt.Printf("  move: %s (%s) → a new replica on %s, healthy before %s is removed\n", m.From, m.Service, m.To, m.From)
	}
	for _, s := range plan.Stay {
		fmt.Printf("  move: %s is not moved (a global service's, or of no service): removed with the machine\n", s)
	}
	for _, r := range plan.Refused {
		fmt.Printf("  ✗ %s\n", r)
	}
	if len(plan.Refused) > 0 {
		return errors.New("leave --move refused: " + strings.Join(plan.Refused, "; ") + " (nothing was changed)")
	}
	return nil
}

// move makes the replacements and removes the replicas here, saying
// each container's outcome.
func (c leaveCmd) move(g *globals, machineID string) error {
	res, err := agentCall(g, shortCommand+evacuateGrace, func(ctx context.Context, a *api.Client) (api.EvacuateResult, error) {
		return a.Evacuate(ctx, api.EvacuateRequest{Machine: machineID})
	})
	for _, m := range res.Moves {
		switch {
		case m.Error != "":
			fmt.Printf("✗ move: %s (%s) to %s: %s\n", m.From, m.Service, m.To, m.Error)
		case m.Done:
			fmt.Printf("✓ move: %s (%s) now runs as %s on %s; %s removed\n", m.From, m.Service, m.New, m.To, m.From)
		default:
			fmt.Printf("  move: %s (%s) to %s: undone (another move failed)\n", m.From, m.Service, m.To)
		}
	}
	if err != nil {
		return fmt.Errorf("move of this machine's replicas: %w", err)
	}
	return nil
}

// evacuateGrace is how long beyond a short command the replacements may
// take to be pulled, made and seen healthy (a rollout's healthy timeout
// is 90 s, longer for slow health checks).
const evacuateGrace = 5 * time.Minute
