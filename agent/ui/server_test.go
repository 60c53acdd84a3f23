package ui

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// network is a Source over fixed data: three machines, m3 cut off from
// m1, one service with a container on m1 and one on m3.
type network struct {
	removed []string
}

func (n *network) Status(context.Context) (api.Status, error) {
	return api.Status{Name: "m1", MachineID: "id1"}, nil
}
func (n *network) Machines(context.Context) ([]api.MachineInfo, error) {
	return []api.MachineInfo{
		{ID: "id1", Name: "m1", State: "self", Mode: "kernel", Address: "10.210.1.1"},
		{ID: "id2", Name: "m2", State: "alive", Mode: "netstack", Address: "10.210.2.1"},
		{ID: "id3", Name: "m3", State: "down", Mode: "kernel", Address: "10.210.3.1"},
	}, nil
}
func (n *network) Mesh(context.Context) (api.MeshStatus, error) {
	return api.MeshStatus{Machine: "m1", NAT: "none", Peers: []api.MeshPeer{
		{Machine: "m2", Path: "relayed", Via: "m3", RTT: 3 * time.Millisecond},
		{Machine: "m3", Path: "direct"},
	}}, nil
}
func (n *network) Services(context.Context) ([]api.ServiceInfo, error) {
	return []api.ServiceInfo{{Name: "web", Image: "nginx:1.27", Running: 1, Total: 2}}, nil
}
func (n *network) Containers(context.Context) ([]api.ContainerInfo, error) {
	return []api.ContainerInfo{
		{Machine: "m1", MachineID: "id1", MachineState: "self", Name: "web-a", Service: "web", State: "running"},
		{Machine: "m3", MachineID: "id3", MachineState: "unreachable", Name: "web-b", Service: "web", State: "running"},
	}, nil
}
func (n *network) ScaleService(context.Context, string, api.ScaleRequest, func(api.RunEvent)) (api.ServiceResult, error) {
	return api.ServiceResult{}, nil
}
func (n *network) RemoveService(_ context.Context, name string) (api.ServiceResult, error) {
	n.removed = append(n.removed, name)
	return api.ServiceResult{Containers: []api.ContainerResult{{Machine: "m1", Action: "removed"}}}, nil
}
func (n *network) StopService(context.Context, string) (api.ServiceResult, error) {
	return api.ServiceResult{}, nil
}
func (n *network) StartService(context.Context, string) (api.ServiceResult, error) {
	return api.ServiceResult{}, nil
}
func (n *network) Rollback(context.Context, string, api.RollbackRequest, func(api.DeployEvent) error) error {
	return nil
}
func (n *network) ServiceLogs(context.Context, string, api.LogsRequest, func(api.LogLine) error) error {
	return nil
}
func (n *network) Ingress(context.Context) (api.IngressStatus, error) {
	return api.IngressStatus{Machine: "m1", Running: true, Routes: []api.IngressRoute{
		{Host: "web.example.com", Path: "/", Protocol: "https", Service: "web",
			Cert: &api.IngressCertificate{State: "valid", NotAfter: time.Date(2099, 3, 1, 0, 0, 0, 0, time.UTC)}},
		{Host: "other.example.com", Path: "/", Protocol: "http", Service: "other"},
	}}, nil
}
func (n *network) Reachable() map[string]bool                  { return map[string]bool{"id1": true, "id2": true} }
func (n *network) Changed(ctx context.Context) <-chan struct{} { return make(chan struct{}) }
func (n *network) PeerView(_ context.Context, id string) (View, error) {
	return View{MachineID: id, Mesh: api.MeshStatus{Machine: "m2", NAT: "symmetric", Peers: []api.MeshPeer{
		{Machine: "m1", Path: "relayed", Via: "m3"}, {Machine: "m3", Path: "direct"}}},
		Reaches: map[string]bool{"id1": true, "id2": true}, Host: HostInfo{Arch: "arm", Load1: 0.5}}, nil
}

func TestPages(t *testing.T) {
	s, err := NewServer(&network{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want []string
	}{
		{"/ui/", []string{`data-machine="m3" data-state="down"`, `data-unseen="m3"`, `data-machine="m2" data-state="alive"`, "arm", "0.50"}},
		{"/ui/mesh", []string{`data-pair="m1-m2" data-path="relayed"`, `data-pair="m1-m3" data-path="cut"`, `data-pair="m2-m3" data-path="cut"`, "NAT symmetric", "<svg"}},
		{"/ui/services", []string{`data-service="web"`, `data-container="web-b" data-state="running" class="stale"`, "last recorded running", `data-confirm="Remove web`,
			`data-host="web.example.com"`, "certificate valid until 2099-03-01"}},
		{"/ui/logs?service=web", []string{`<option selected>web</option>`, `id="logs"`}},
		{"/ui/deploy", []string{`id="deploy"`, `data-unseen="m3"`}},
		{"/ui/static/style.css", []string{"--bg"}},
		{"/ui/static/app.js", []string{"EventSource"}},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("GET", tt.path, nil))
		body := w.Body.String()
		if w.Code != 200 {
			t.Errorf("GET %s: %d %s", tt.path, w.Code, body)
			continue
		}
		for _, want := range tt.want {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: no %q in\n%s", tt.path, want, body)
			}
		}
	}
}

func TestActionsRefuseCrossSite(t *testing.T) {
	n := &network{}
	s, err := NewServer(n, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	post := func(hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "http://127.0.0.1:8765/ui/services/web/remove", strings.NewReader(""))
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	if w := post(map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}); w.Code != http.StatusForbidden {
		t.Errorf("cross-site POST: %d", w.Code)
	}
	if w := post(map[string]string{"Origin": "https://evil.example"}); w.Code != http.StatusForbidden {
		t.Errorf("POST from another origin: %d", w.Code)
	}
	if len(n.removed) != 0 {
		t.Fatalf("a refused POST removed %v", n.removed)
	}
	w := post(map[string]string{"Sec-Fetch-Site": "same-origin"})
	if w.Code != http.StatusSeeOther || len(n.removed) != 1 {
		t.Fatalf("same-origin POST: %d, removed %v", w.Code, n.removed)
	}
	if loc := w.Header().Get("Location"); !strings.Contains(loc, "removed+web") {
		t.Errorf("redirect to %q", loc)
	}
}

func TestEventsPushTheLivePart(t *testing.T) {
	s, err := NewServer(&network{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/ui/events?page=overview", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64<<10)
	var got strings.Builder
	for !strings.Contains(got.String(), "\n\n") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF || err != nil {
			break
		}
	}
	if !strings.HasPrefix(got.String(), "event: live\ndata: ") || !strings.Contains(got.String(), `data-machine="m3"`) {
		t.Fatalf("first event: %q", got.String())
	}
}
