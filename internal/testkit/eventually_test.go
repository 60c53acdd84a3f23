package testkit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	tests := []struct {
		name     string
		okAfter  int // calls before check succeeds; -1: never
		timeout  time.Duration
		wantErr  string
		minCalls int
	}{
		{name: "at once", okAfter: 0, timeout: time.Second, minCalls: 1},
		{name: "after a few polls", okAfter: 3, timeout: 5 * time.Second, minCalls: 4},
		{name: "never", okAfter: -1, timeout: 200 * time.Millisecond, wantErr: "widget ready: not after", minCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			calls := 0
			_, err := Poll(ctx, "widget ready", func() error {
				calls++
				if tt.okAfter >= 0 && calls > tt.okAfter {
					return nil
				}
				return errors.New("widget says 3 of 4")
			})
			if calls < tt.minCalls {
				t.Errorf("check called %d times, want at least %d", calls, tt.minCalls)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Poll: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "widget says 3 of 4") {
				t.Fatalf("Poll error = %v, want it to contain %q and the last check's error", err, tt.wantErr)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Poll error %v does not wrap the context's error", err)
			}
		})
	}
}
