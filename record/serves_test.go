package record

import "testing"

func TestServes(t *testing.T) {
	tests := []struct {
		state, health string
		want          bool
	}{
		{"running", "", true},
		{"running", "none", true},
		{"running", "healthy", true},
		{"running", "starting", false},
		{"running", "unhealthy", false},
		{"running", "bogus", false},
		{"created", "", false},
		{"restarting", "", false},
		{"paused", "healthy", false},
		{"exited", "", false},
		{"exited", "healthy", false},
		{"dead", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		c := &Container{State: tc.state, Health: tc.health}
		if got := c.Serves(); got != tc.want {
			t.Errorf("state %q health %q: Serves() = %v, want %v", tc.state, tc.health, got, tc.want)
		}
	}
}
