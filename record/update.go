package record

import (
	"fmt"
	"time"
)

// UpdateConfig is how a service's rollouts go (Compose's
// deploy.update_config). The zero value is the defaults.
type UpdateConfig struct {
	// Parallelism is how many containers are replaced at once; default 1.
	Parallelism int `json:"parallelism,omitempty"`
	// Delay is the pause between two batches.
	Delay time.Duration `json:"delay,omitempty"`
	// Order is start-first (default: the new container is healthy before
	// the old one stops) or stop-first (the old one stops first, for
	// services that cannot run twice, e.g. on one volume).
	Order string `json:"order,omitempty"`
	// Monitor is how long a new container must stay running (and healthy)
	// after it is first healthy; default the orchestrator's settle time.
	Monitor time.Duration `json:"monitor,omitempty"`
	// FailureAction is rollback (default: the previous version is
	// restored everywhere) or pause (the rollout stops, old and new
	// mixed).
	FailureAction string `json:"failure_action,omitempty"`
}

// Update orders and failure actions.
const (
	StartFirst        = "start-first"
	StopFirst         = "stop-first"
	OnFailureRollback = "rollback"
	OnFailurePause    = "pause"
)

// Check says which field is wrong.
func (u *UpdateConfig) Check() error {
	if u == nil {
		return nil
	}
	if u.Parallelism < 0 || u.Parallelism > 100 {
		return fmt.Errorf("update_config.parallelism %d is outside 0..100", u.Parallelism)
	}
	if u.Delay < 0 || u.Monitor < 0 {
		return fmt.Errorf("update_config delay %v and monitor %v must not be negative", u.Delay, u.Monitor)
	}
	switch u.Order {
	case "", StartFirst, StopFirst:
	default:
		return fmt.Errorf("update_config.order %q is not start-first or stop-first", u.Order)
	}
	switch u.FailureAction {
	case "", OnFailureRollback, OnFailurePause:
	default:
		return fmt.Errorf("update_config.failure_action %q is not rollback or pause", u.FailureAction)
	}
	return nil
}

// Resolved is u with the defaults filled in (monitor: settle when unset).
func (u *UpdateConfig) Resolved(settle time.Duration) UpdateConfig {
	var r UpdateConfig
	if u != nil {
		r = *u
	}
	r.Parallelism = max(r.Parallelism, 1)
	if r.Order == "" {
		r.Order = StartFirst
	}
	if r.FailureAction == "" {
		r.FailureAction = OnFailureRollback
	}
	if r.Monitor == 0 {
		r.Monitor = settle
	}
	return r
}
