package orchestrate

import (
	"reflect"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// TestRequestOfInvertsSpecOf: a stored spec turned back into a run
// request (a rollback's) makes the same spec again, key for key, so a
// rollback plans a version as the deploy that made it did.
func TestRequestOfInvertsSpecOf(t *testing.T) {
	for _, r := range []api.RunRequest{
		{Name: "web", Image: "nginx:1"},
		{Name: "web.blog", Image: "nginx:1", Cmd: []string{"a"}, Env: []string{"A=1"}, Volumes: []string{"data:/d"},
			Ports: []string{"80:80"}, Expose: []string{"9000"}, Restart: "always", Health: []string{"CMD", "true"},
			HealthInterval: time.Second, HealthTimeout: 2 * time.Second, HealthRetries: 3, HealthStartPeriod: 4 * time.Second,
			Entrypoint: []string{"/e"}, User: "u", WorkingDir: "/w", Labels: map[string]string{"k": "v"}, Init: true,
			CapAdd: []string{"NET_ADMIN"}, CapDrop: []string{"ALL"}, StopSignal: "SIGINT", StopGracePeriod: "5s",
			Ulimits: []string{"nofile=1024"}, LogDriver: "json-file", LogOptions: map[string]string{"max-size": "1m"},
			Tmpfs: []string{"/t"}, CPUs: 1.5, Memory: 1 << 20, ReserveCPUs: 0.5, ReserveMemory: 1 << 19,
			Constraints: []string{"node.role==ingress"}},
	} {
		spec := specOf(r)
		if back := specOf(requestOf(spec)); !reflect.DeepEqual(back, spec) {
			t.Errorf("%s: specOf(requestOf(spec))\n%+v\nwant\n%+v", r.Name, back, spec)
		}
	}
}
