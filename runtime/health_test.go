package runtime

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

func TestHealthTimings(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		spec                     ContainerSpec
		interval, timeout, start time.Duration
		retries                  int
		bad                      bool
	}{
		{name: "defaults", interval: 2 * time.Second, timeout: 2 * time.Second, retries: 3},
		{name: "set", spec: ContainerSpec{HealthInterval: time.Second, HealthTimeout: 500 * time.Millisecond, HealthRetries: 5, HealthStartPeriod: 30 * time.Second},
			interval: time.Second, timeout: 500 * time.Millisecond, retries: 5, start: 30 * time.Second},
		{name: "negative", spec: ContainerSpec{HealthRetries: -1}, bad: true},
		{name: "under Docker's minimum", spec: ContainerSpec{HealthInterval: time.Microsecond}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			s.Service, s.Image, s.Health = "web", "nginx", []string{"CMD", "true"}
			err := s.Validate()
			if tc.bad {
				if !errors.Is(err, ErrBadSpec) {
					t.Fatalf("Validate = %v, want ErrBadSpec", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			i, to, r, st := s.HealthTimings()
			if i != tc.interval || to != tc.timeout || r != tc.retries || st != tc.start {
				t.Errorf("timings %v %v %d %v, want %v %v %d %v", i, to, r, st, tc.interval, tc.timeout, tc.retries, tc.start)
			}
		})
	}
}

// TestDockerHealthTimings: the spec's timings are the container's health
// check in Docker, and the check runs with them.
func TestDockerHealthTimings(t *testing.T) {
	rt := newTestRuntime(t, "healthtimings")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := rt.Create(ctx, ContainerSpec{Service: "web", Image: testimage.Tag,
		Health:         []string{"CMD", "/echoserver", "get", "http://127.0.0.1:8080/"},
		HealthInterval: 300 * time.Millisecond, HealthTimeout: time.Second, HealthRetries: 4, HealthStartPeriod: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Remove(context.WithoutCancel(ctx), c.ID)
	raw, err := rt.InspectRaw(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	hc := raw.Config.Healthcheck
	if hc == nil || hc.Interval != 300*time.Millisecond || hc.Timeout != time.Second || hc.Retries != 4 || hc.StartPeriod != 5*time.Second {
		t.Fatalf("Docker's health check %+v", hc)
	}
	// The check runs with them: the container becomes healthy.
	eventually(t, "healthy", 30*time.Second, func() error {
		got, err := rt.Inspect(ctx, c.ID)
		if err != nil {
			return err
		}
		if got.Health != "healthy" {
			return errors.New(got.Health)
		}
		return nil
	})
}
