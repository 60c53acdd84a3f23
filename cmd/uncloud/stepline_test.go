package main

import (
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestStepLine(t *testing.T) {
	for _, tc := range []struct {
		e    api.DeployEvent
		want string
	}{
		{api.DeployEvent{Action: "create", Service: "web"}, "create web"},
		{api.DeployEvent{Action: "replace", Service: "web", Container: "web-1a2b", Machine: "m2"}, "replace web web-1a2b on m2"},
		{api.DeployEvent{Action: "failed", Service: "db", Machine: "m1", Detail: "unhealthy"}, "failed db on m1: unhealthy"},
	} {
		if got := stepLine(tc.e); got != tc.want {
			t.Errorf("stepLine(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}
