package record

import "testing"

func TestServes(t *testing.T) {
	tests := []struct {
		state, health string
		draining      bool
		want          bool
	}{
		{"running", "", false, true},
		{"running", "", true, false},
		{"running", "healthy", true, false},
		{"running", "none", false, true},
		{"running", "healthy", false, true},
		{"running", "starting", false, false},
		{"running", "unhealthy", false, false},
		{"running", "bogus", false, false},
		{"created", "", false, false},
		{"restarting", "", false, false},
		{"paused", "healthy", false, false},
		{"exited", "", false, false},
		{"exited", "healthy", false, false},
		{"dead", "", false, false},
		{"", "", false, false},
	}
	for _, tc := range tests {
		c := &Container{State: tc.state, Health: tc.health, Draining: tc.draining}
		if got := c.Serves(); got != tc.want {
			t.Errorf("state %q health %q draining %v: Serves() = %v, want %v", tc.state, tc.health, tc.draining, got, tc.want)
		}
	}
}
