package main

import (
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestRunProgress(t *testing.T) {
	for _, tc := range []struct {
		name        string
		done, total int
		r           api.ContainerResult
		want        string
	}{
		{"created", 2, 10, api.ContainerResult{Machine: "m1", Name: "web-3", Action: "created", Address: "10.210.1.5"},
			"[2/10] m1: web-3 created at 10.210.1.5"},
		{"failed", 1, 2, api.ContainerResult{Machine: "m2", Action: "created", Error: "image x is not in Docker on m2"},
			"[1/2] m2: error: image x is not in Docker on m2"},
		{"global mode: no total", 3, 0, api.ContainerResult{Machine: "m3", Name: "agent-m3", Action: "created", Address: "10.210.3.2"},
			"[3] m3: agent-m3 created at 10.210.3.2"},
	} {
		if got := runProgress(tc.done, tc.total, tc.r); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
