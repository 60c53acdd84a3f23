package main

import (
	"slices"
	"testing"

	"github.com/uncloud-mesh/uncloud/agent"
)

// TestMetricsFlags: what init and join check before changing anything,
// and what reaches the background agent (its flags) or the foreground
// one (its options).
func TestMetricsFlags(t *testing.T) {
	tests := []struct {
		flags   metricsFlags
		ok      bool
		args    []string
		options agent.DaemonOptions
	}{
		{flags: metricsFlags{}, ok: true},
		{flags: metricsFlags{MetricsAddr: "mesh:9101"}, ok: true, args: []string{"--metrics-addr", "mesh:9101"},
			options: agent.DaemonOptions{MetricsAddr: "mesh:9101"}},
		{flags: metricsFlags{MetricsAddr: "127.0.0.1:9101"}, ok: true, args: []string{"--metrics-addr", "127.0.0.1:9101"},
			options: agent.DaemonOptions{MetricsAddr: "127.0.0.1:9101"}},
		{flags: metricsFlags{MetricsAddr: "203.0.113.7:9101"}},
		{flags: metricsFlags{MetricsAddr: ":9101"}},
		{flags: metricsFlags{MetricsAddr: ":9101", MetricsPublic: true}, ok: true, args: []string{"--metrics-addr", ":9101", "--metrics-public"},
			options: agent.DaemonOptions{MetricsAddr: ":9101", MetricsPublic: true}},
	}
	for _, tt := range tests {
		err := tt.flags.check()
		if (err == nil) != tt.ok {
			t.Errorf("%+v: check: %v, want ok=%v", tt.flags, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if got := tt.flags.args(); !slices.Equal(got, tt.args) {
			t.Errorf("%+v: args %q, want %q", tt.flags, got, tt.args)
		}
		var o agent.DaemonOptions
		tt.flags.apply(&o)
		if o.MetricsAddr != tt.options.MetricsAddr || o.MetricsPublic != tt.options.MetricsPublic {
			t.Errorf("%+v: options %q %v", tt.flags, o.MetricsAddr, o.MetricsPublic)
		}
	}
}
