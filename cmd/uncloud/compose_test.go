package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeCompose(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "compose.yaml")
}

func TestParseCompose(t *testing.T) {
	path := writeCompose(t, map[string]string{
		"compose.yaml": `
services:
  web:
    image: example/web:${TAG}
    command: ["/srv", "--port", "8080"]
    environment:
      MODE: prod
    env_file: web.env
    ports:
      - app.example.com:8080/https
      - 9090
    volumes:
      - data:/var/lib/web
      - /etc/ssl:/ssl:ro
    deploy:
      replicas: 3
      resources:
        limits: {cpus: "1"}
    healthcheck:
      test: ["CMD", "/srv", "probe"]
      interval: 5s
    restart: always
    x-machines: [m1, m2]
    x-allow-from: [ingress, "machine:m3"]
    privileged: true
  agent:
    image: example/agent
    deploy: {mode: global}
    x-allow-from: web
networks:
  front: {}
volumes:
  data: {}
`,
		"web.env": "FROM_FILE=1\n",
	})
	services, warnings, err := parseCompose(context.Background(), path, map[string]string{"TAG": "2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 2 || services[0].Name != "agent" || services[1].Name != "web" {
		t.Fatalf("services = %+v", services)
	}
	agent, web := services[0], services[1]
	if agent.Mode != "global" || agent.Image != "example/agent" {
		t.Errorf("agent = %+v", agent)
	}
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"image (interpolated)", web.Image, "example/web:2"},
		{"command", strings.Join(web.Cmd, " "), "/srv --port 8080"},
		{"env (with env_file)", strings.Join(web.Env, ","), "FROM_FILE=1,MODE=prod"},
		{"ports (uncloud syntax kept)", strings.Join(web.Ports, ","), "app.example.com:8080/https,9090"},
		{"volumes", strings.Join(web.Volumes, ","), "data:/var/lib/web,/etc/ssl:/ssl:ro"},
		{"replicas", web.Replicas, 3},
		{"health", strings.Join(web.Health, " "), "CMD /srv probe"},
		{"restart", web.Restart, "always"},
		{"machines", strings.Join(web.Machines, ","), "m1,m2"},
		{"allow-from (list)", strings.Join(web.AllowFrom, ","), "ingress,machine:m3"},
		{"agent allow-from (string)", strings.Join(agent.AllowFrom, ","), "web"},
	} {
		if tc.got != tc.want {
			t.Errorf("web %s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	for _, want := range []string{
		`top-level key "networks" is not supported`,
		`service web: key "privileged" is not supported`,
		`service web: deploy.resources is not supported`,
	} {
		if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, want) }) {
			t.Errorf("no warning %q in %q", want, warnings)
		}
	}
}

func TestParseComposeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"no services", "volumes: {}\n", "no services"},
		{"build only", "services:\n  a:\n    build: .\n", "neither an image"},
		{"long port syntax", "services:\n  a:\n    image: x\n    ports:\n      - target: 80\n", "short syntax"},
		{"bad yaml", "services: [\n", "compose.yaml"},
		{"schema", "services:\n  a:\n    image: x\n    deploy:\n      replicas: many\n", "replicas"},
	} {
		path := writeCompose(t, map[string]string{"compose.yaml": tc.body})
		_, _, err := parseCompose(context.Background(), path, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
