package testkit

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Polling starts fast, so a wait ends soon after a quick condition
// holds, and slows to maxPollEvery, so a long wait whose check runs a
// process (many e2e checks run the CLI) does not load a 2-core machine
// that is running the lab's agents.
const (
	firstPollEvery = 25 * time.Millisecond
	maxPollEvery   = 250 * time.Millisecond
)

// Poll calls check until it returns nil or ctx ends, and returns how long
// that took. The error names what was awaited and carries check's last
// error, which usually says what was seen instead.
func Poll(ctx context.Context, what string, check func() error) (time.Duration, error) {
	start := time.Now()
	every := firstPollEvery
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		err := check()
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%s: not after %v: %w (last: %v)",
				what, time.Since(start).Round(time.Millisecond), ctx.Err(), err)
		case <-timer.C:
		}
		every = min(2*every, maxPollEvery)
		timer.Reset(every)
	}
}

// Eventually fails the test unless check returns nil within timeout
// (stretched under emulation, see Timeout), and returns how long it took.
func Eventually(t testing.TB, what string, timeout time.Duration, check func() error) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout(timeout))
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
