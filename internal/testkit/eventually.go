package testkit

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// pollEvery is how often a condition is re-checked: often enough that a
// wait ends soon after the condition holds, rarely enough that polling
// does not load a 2-core machine running a lab of agents.
const pollEvery = 50 * time.Millisecond

// Poll calls check until it returns nil or ctx ends, and returns how long
// that took. The error names what was awaited and carries check's last
// error, which usually says what was seen instead.
func Poll(ctx context.Context, what string, check func() error) (time.Duration, error) {
	start := time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%s: not after %v: %w (last: %v)",
				what, time.Since(start).Round(time.Millisecond), ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Eventually fails the test unless check returns nil within timeout, and
// returns how long it took.
func Eventually(t testing.TB, what string, timeout time.Duration, check func() error) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	took, err := Poll(ctx, what, check)
	if err != nil {
		t.Fatal(err)
	}
	return took
}

// EventuallyTrue is Eventually for a condition that has nothing to say
// when it does not hold yet.
func EventuallyTrue(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	return Eventually(t, what, timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// errNotYet is the last error of a plain condition that never held.
var errNotYet = fmt.Errorf("condition still false")
