package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

// TestUIRoutes: only the dashboard's paths reach the agent, with the
// browser's Host kept for the agent's origin check; a deploy is read
// here and a bad file never reaches the agent.
func TestUIRoutes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	agent := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Host)
		w.Write([]byte("from the agent"))
	})}}
	agent.Start()
	defer agent.Close()
	client, err := api.NewClient(sock, api.SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	h := uiRoutes(client)
	tests := []struct {
		method, path, body string
		want               int
		reaches            string
		says               string
	}{
		{"GET", "/ui/mesh", "", 200, "GET /ui/mesh 127.0.0.1:8765", "from the agent"},
		{"GET", "/v1/status", "", 404, "", ""},
		{"DELETE", "/v1/machines/m2", "", 404, "", ""},
		{"POST", "/ui/deploy/plan", url.Values{"project": {"app"}, "compose": {"services: [oops"}}.Encode(), 400, "", "error:"},
		{"POST", "/ui/deploy/plan", url.Values{"compose": {"services:\n  web:\n    image: nginx\n"}}.Encode(), 400, "", "give a project name"},
		{"POST", "/ui/deploy/delete", "", 404, "", ""},
	}
	for _, tt := range tests {
		seen = nil
		r := httptest.NewRequest(tt.method, "http://127.0.0.1:8765"+tt.path, strings.NewReader(tt.body))
		if tt.body != "" {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.says) {
			t.Errorf("%s %s: %d %q, want %d with %q", tt.method, tt.path, w.Code, w.Body, tt.want, tt.says)
		}
		if got := strings.Join(seen, ","); got != tt.reaches {
			t.Errorf("%s %s reached the agent as %q, want %q", tt.method, tt.path, got, tt.reaches)
		}
	}
}

func TestLoadPastedCompose(t *testing.T) {
	res, err := loadPastedCompose(context.Background(), "services:\n  web:\n    image: nginx:1.27\n    deploy:\n      replicas: 2\n  db:\n    image: postgres:17\n", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if res.Project != "shop" || len(res.Services) != 2 {
		t.Fatalf("project %q, %d services", res.Project, len(res.Services))
	}
	for _, s := range res.Services {
		if s.Project != "shop" {
			t.Errorf("service %s in project %q", s.Name, s.Project)
		}
	}
	if _, err := loadPastedCompose(context.Background(), "services:\n  web: {}\n", "shop"); err == nil {
		t.Error("a service without an image was loaded")
	}
}
