package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// TestComposeRolloutKeys: the health check's timings and
// deploy.update_config reach the request, without warnings; what is left
// out is named.
func TestComposeRolloutKeys(t *testing.T) {
	dir := writeProject(t, "rollout", map[string]string{"compose.yaml": `
services:
  web:
    image: example/web:1
    healthcheck:
      test: ["CMD", "/srv", "probe"]
      interval: 5s
      timeout: 1500ms
      retries: 4
      start_period: 20s
    deploy:
      update_config:
        parallelism: 2
        delay: 10s
        order: stop-first
        monitor: 30s
        failure_action: pause
        max_failure_ratio: 0.5
  db:
    image: example/db:1
    deploy:
      update_config: {parallelism: 0}
  cache:
    image: example/cache:1
    deploy:
      update_config: {parallelism: 2, failure_action: continue}
`})
	res, err := deployIn(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cache, db, web := res.Services[0], res.Services[1], res.Services[2]
	if cache.Update != nil {
		t.Errorf("an update_config with failure_action continue was kept: %+v", cache.Update)
	}
	warnings := res.Warnings
	if web.HealthInterval != 5*time.Second || web.HealthTimeout != 1500*time.Millisecond || web.HealthRetries != 4 || web.HealthStartPeriod != 20*time.Second {
		t.Errorf("health timings %v %v %d %v", web.HealthInterval, web.HealthTimeout, web.HealthRetries, web.HealthStartPeriod)
	}
	wantUpdate := api.UpdateConfig{Parallelism: 2, Delay: 10 * time.Second, Order: "stop-first", Monitor: 30 * time.Second, FailureAction: "pause"}
	if web.Update == nil || *web.Update != wantUpdate {
		t.Errorf("update_config %+v, want %+v", web.Update, wantUpdate)
	}
	if db.Update == nil || db.Update.Parallelism != 100 {
		t.Errorf("parallelism 0 (all at once) became %+v", db.Update)
	}
	if db.HealthInterval != 0 || db.By == "" || !strings.Contains(web.By, "@") {
		t.Errorf("db: interval %v, by %q; web by %q", db.HealthInterval, db.By, web.By)
	}
	want := []string{"services.cache.deploy.update_config.failure_action: continue: not supported by uncloud, ignored",
		"services.web.deploy.update_config.max_failure_ratio: not supported by uncloud, ignored"}
	if !slices.Equal(warnings, want) {
		t.Errorf("warnings %q, want %q", warnings, want)
	}
}
