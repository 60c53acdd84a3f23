package main

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	composecli "github.com/compose-spec/compose-go/v2/cli"

	"github.com/uncloud-mesh/uncloud/api"
)

// loadService loads a Compose file with compose-go as Docker Compose does
// and returns one service's config.
func loadService(t *testing.T, yaml, name string) api.RunRequest {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := composecli.NewProjectOptions([]string{path}, composecli.WithName("test"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("no service %s", name)
	}
	var req api.RunRequest
	warns := applyComposeKeys(s, &req)
	req.Name = "" // the loader's
	t.Logf("warnings: %q", warns)
	if req.Labels == nil {
		req.Labels = map[string]string{}
	}
	req.Labels["#warnings"] = ""
	for _, w := range warns {
		req.Labels["#warnings"] += w + "\n"
	}
	return req
}

func TestApplyComposeKeys(t *testing.T) {
	req := loadService(t, `
services:
  web:
    image: nginx
    ports:
      - "8080:80"
      - "127.0.0.1:5353:53/udp"
      - "9000-9001:90-91"
      - "[::1]:7000:70"
      - "3000"
    expose: ["8081", "9090/udp"]
    volumes:
      - data:/var/lib/data
      - ./conf:/etc/conf:ro
      - type: tmpfs
        target: /cache
        tmpfs: {size: 1048576}
      - /anon
    tmpfs: /run
    entrypoint: ["/docker-entrypoint.sh", "-x"]
    user: "1000:1000"
    working_dir: /app
    labels: {traefik.enable: "true", uncloud.service: evil}
    init: true
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    stop_signal: SIGQUIT
    stop_grace_period: 1m30s
    ulimits:
      nproc: 65535
      nofile: {soft: 1024, hard: 2048}
    logging:
      driver: json-file
      options: {max-size: 10m}
    deploy:
      resources:
        limits: {cpus: "1.5", memory: 512M}
        reservations: {cpus: "0.25", memory: 128M}
      placement:
        constraints: ["node.labels.disk==ssd", "node.role!=ingress"]
        preferences: [{spread: node.labels.zone}]
      restart_policy: {condition: on-failure, max_attempts: 3}
volumes:
  data: {}
`, "web")
	if !slices.Equal(req.Expose, []string{"8081", "9090/udp"}) {
		t.Errorf("expose %q", req.Expose)
	}
	if !slices.Equal(req.Tmpfs, []string{"/cache:size=1048576", "/run"}) {
		t.Errorf("tmpfs %q", req.Tmpfs)
	}
	if !slices.Equal(req.Entrypoint, []string{"/docker-entrypoint.sh", "-x"}) || req.User != "1000:1000" || req.WorkingDir != "/app" ||
		!req.Init || req.StopSignal != "SIGQUIT" || req.StopGracePeriod != "1m30s" {
		t.Errorf("basics %+v", req)
	}
	if req.Labels["traefik.enable"] != "true" || req.Labels["uncloud.service"] != "" {
		t.Errorf("labels %v", req.Labels)
	}
	if !slices.Equal(req.CapAdd, []string{"NET_ADMIN"}) || !slices.Equal(req.CapDrop, []string{"ALL"}) {
		t.Errorf("caps %v %v", req.CapAdd, req.CapDrop)
	}
	if !slices.Equal(req.Ulimits, []string{"nofile=1024:2048", "nproc=65535"}) {
		t.Errorf("ulimits %q", req.Ulimits)
	}
	if req.LogDriver != "json-file" || !maps.Equal(req.LogOptions, map[string]string{"max-size": "10m"}) {
		t.Errorf("logging %s %v", req.LogDriver, req.LogOptions)
	}
	if req.CPUs != 1.5 || req.Memory != 512<<20 || req.ReserveCPUs != 0.25 || req.ReserveMemory != 128<<20 {
		t.Errorf("resources %v %v %v %v", req.CPUs, req.Memory, req.ReserveCPUs, req.ReserveMemory)
	}
	if !slices.Equal(req.Constraints, []string{"node.labels.disk==ssd", "node.role!=ingress"}) || req.Restart != "on-failure:3" {
		t.Errorf("placement %q restart %q", req.Constraints, req.Restart)
	}
	if len(req.Ports) != 0 || len(req.Volumes) != 0 {
		t.Errorf("ports %q and volumes %q are composeService's", req.Ports, req.Volumes)
	}
	wantWarn := "service web: label uncloud.service is under uncloud.* (uncloud's own) and is ignored\n" +
		"service web: deploy.placement: only constraints are supported (replicas spread evenly)\n"
	if got := req.Labels["#warnings"]; got != wantWarn {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, wantWarn)
	}
}

func TestApplyComposeKeysLegacyResources(t *testing.T) {
	req := loadService(t, `
services:
  db:
    image: postgres
    cpus: 2
    mem_limit: 1g
    mem_reservation: 256m
    restart: always
`, "db")
	if req.CPUs != 2 || req.Memory != 1<<30 || req.ReserveMemory != 256<<20 {
		t.Errorf("resources %v %v %v", req.CPUs, req.Memory, req.ReserveMemory)
	}
}
