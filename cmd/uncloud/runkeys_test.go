package main

import (
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestRunKeysApply(t *testing.T) {
	k := runKeys{Entrypoint: "/bin/sh", User: "1000:1000", Workdir: "/app", Label: []string{"a=b", "flag"},
		StopTimeout: "20", Memory: "512m", ReserveMemory: "1g", CPUs: 1.5, LogOpt: []string{"max-size=10m"},
		LogDriver: "json-file", Constraint: []string{"node.labels.disk==ssd"}}
	var req api.RunRequest
	if err := k.apply(&req); err != nil {
		t.Fatal(err)
	}
	if req.Entrypoint[0] != "/bin/sh" || req.User != "1000:1000" || req.WorkingDir != "/app" ||
		req.Labels["a"] != "b" || req.Labels["flag"] != "" || req.StopGracePeriod != "20s" ||
		req.Memory != 512<<20 || req.ReserveMemory != 1<<30 || req.CPUs != 1.5 ||
		req.LogOptions["max-size"] != "10m" || req.Constraints[0] != "node.labels.disk==ssd" {
		t.Errorf("request %+v", req)
	}
	for _, bad := range []runKeys{{Memory: "lots"}, {ReserveMemory: "-1"}, {Label: []string{"=x"}}, {LogOpt: []string{"=1"}}} {
		if err := bad.apply(&api.RunRequest{}); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
