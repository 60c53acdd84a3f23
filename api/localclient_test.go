package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// seen is one request as the server got it.
type seen struct {
	Method, URI, Body string
}

// recorder answers every request with answer (a status and a body) and
// keeps what it got, so a test can pin the wire format.
// checkCall compares one recorded request and its decoded answer with
// what the call should have sent and returned.
func checkCall(t *testing.T, got *seen, method, uri, body string, res, want any) {
	t.Helper()
	if got.Method != method || got.URI != uri {
		t.Errorf("request = %s %s, want %s %s", got.Method, got.URI, method, uri)
	}
	if got.Body != body {
		t.Errorf("body = %q, want %q", got.Body, body)
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("answer = %#v, want %#v", res, want)
	}
}

func recorder(t *testing.T, status int, contentType, answer string) (*httptest.Server, *seen) {
	t.Helper()
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = seen{Method: r.Method, URI: r.URL.RequestURI(), Body: string(b)}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func testLocalClient(srv *httptest.Server) *Client {
	return &Client{HTTP: srv.Client(), BaseURL: srv.URL, Target: "test.sock"}
}

// TestLocalClientCalls pins every typed call to its method, path and body
// (literal strings here, not the constants: these are what older and newer
// agents understand) and checks the answer is decoded.
func TestLocalClientCalls(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		call   func(context.Context, *Client) (any, error)
		method string
		uri    string
		body   string // JSON the server must get; "" for none
		want   any
	}{
		{"Status", `{"name":"m1","port":51820}`,
			func(ctx context.Context, c *Client) (any, error) { return c.Status(ctx) },
			"GET", "/v1/status", "", Status{Name: "m1", Port: 51820}},
		{"StateList", `[{"key":"/machines/a","value":{}}]`,
			func(ctx context.Context, c *Client) (any, error) { return c.StateList(ctx, "/machines/") },
			"GET", "/v1/state?prefix=%2Fmachines%2F", "", []StateEntry{{Key: "/machines/a", Value: json.RawMessage(`{}`)}}},
		{"StateGet", `{"key":"/k","value":1}`,
			func(ctx context.Context, c *Client) (any, error) { return c.StateGet(ctx, "/k") },
			"GET", "/v1/state/get?key=%2Fk", "", StateEntry{Key: "/k", Value: json.RawMessage(`1`)}},
		{"Machines", `[{"id":"a","name":"m1"}]`,
			func(ctx context.Context, c *Client) (any, error) { return c.Machines(ctx) },
			"GET", "/v1/machines", "", []MachineInfo{{ID: "a", Name: "m1"}}},
		{"RemoveMachine", `{"name":"m2","rotated":1,"machines":2}`,
			func(ctx context.Context, c *Client) (any, error) { return c.RemoveMachine(ctx, "m 2") },
			"DELETE", "/v1/machines/m%202", "", RemoveResult{Name: "m2", Rotated: 1, Machines: 2}},
		{"UpdateMachine", `{"id":"a","name":"new"}`,
			func(ctx context.Context, c *Client) (any, error) {
				return c.UpdateMachine(ctx, "old", MachineUpdate{Name: "new"})
			},
			"PATCH", "/v1/machines/old", `{"name":"new"}`, MachineInfo{ID: "a", Name: "new"}},
		{"CreateToken", `{"id":"t1","token":"secret","uses_left":1}`,
			func(ctx context.Context, c *Client) (any, error) {
				return c.CreateToken(ctx, TokenRequest{TTL: time.Minute, Uses: 1})
			},
			"POST", "/v1/tokens", `{"ttl":60000000000,"uses":1}`, TokenInfo{ID: "t1", Token: "secret", UsesLeft: 1}},
		{"ListTokens", `[{"id":"t1","state":"usable"}]`,
			func(ctx context.Context, c *Client) (any, error) { return c.ListTokens(ctx) },
			"GET", "/v1/tokens", "", []TokenInfo{{ID: "t1", State: "usable"}}},
		{"RevokeToken", `{}`,
			func(ctx context.Context, c *Client) (any, error) { return nil, c.RevokeToken(ctx, "t1") },
			"DELETE", "/v1/tokens/t1", "", nil},
		{"Mesh", `{"machine":"m1","nat":"none"}`,
			func(ctx context.Context, c *Client) (any, error) { return c.Mesh(ctx) },
			"GET", "/v1/mesh", "", MeshStatus{Machine: "m1", NAT: "none"}},
		{"Ingress", `{"machine":"m1","running":true}`,
			func(ctx context.Context, c *Client) (any, error) { return c.Ingress(ctx) },
			"GET", "/v1/ingress", "", IngressStatus{Machine: "m1", Running: true}},
		{"DNSNames", `{"listen":["10.0.0.1:53"]}`,
			func(ctx context.Context, c *Client) (any, error) { return c.DNSNames(ctx) },
			"GET", "/v1/dns", "", DNSNames{Listen: []string{"10.0.0.1:53"}}},
		{"DNSQuery", `{"rcode":"NOERROR"}`,
			func(ctx context.Context, c *Client) (any, error) { return c.DNSQuery(ctx, "web.internal", "A") },
			"GET", "/v1/dns/query?name=web.internal&type=A", "", DNSAnswer{Rcode: "NOERROR"}},
		{"RunService", `{"service":"web"}`,
			func(ctx context.Context, c *Client) (any, error) {
				return c.RunService(ctx, RunRequest{Image: "nginx"})
			},
			"POST", "/v1/services", `{"image":"nginx"}`, ServiceResult{Service: "web"}},
		{"Containers", `[{"id":"c1","machine":"m1"}]`,
			func(ctx context.Context, c *Client) (any, error) { return c.Containers(ctx) },
			"GET", "/v1/containers", "", []ContainerInfo{{ID: "c1", Machine: "m1"}}},
		{"Services", `[{"name":"web","running":2}]`,
			func(ctx context.Context, c *Client) (any, error) { return c.Services(ctx) },
			"GET", "/v1/services", "", []ServiceInfo{{Name: "web", Running: 2}}},
		{"InspectService", `{"name":"web","containers":[]}`,
			func(ctx context.Context, c *Client) (any, error) { return c.InspectService(ctx, "web") },
			"GET", "/v1/services/web", "", ServiceDetail{ServiceInfo: ServiceInfo{Name: "web"}, Containers: []ContainerInfo{}}},
		{"ScaleService", `{"service":"web"}`,
			func(ctx context.Context, c *Client) (any, error) {
				return c.ScaleService(ctx, "web", ScaleRequest{Replicas: 3})
			},
			"POST", "/v1/services/web/scale", `{"replicas":3}`, ServiceResult{Service: "web"}},
		{"RemoveService", `{"service":"web"}`,
			func(ctx context.Context, c *Client) (any, error) { return c.RemoveService(ctx, "web") },
			"DELETE", "/v1/services/web", "", ServiceResult{Service: "web"}},
		{"StopService", `{"service":"web"}`,
			func(ctx context.Context, c *Client) (any, error) { return c.StopService(ctx, "web") },
			"POST", "/v1/services/web/stop", "", ServiceResult{Service: "web"}},
		{"StartService", `{"service":"web"}`,
			func(ctx context.Context, c *Client) (any, error) { return c.StartService(ctx, "web") },
			"POST", "/v1/services/web/start", "", ServiceResult{Service: "web"}},
		{"ExecService", `{"container":"web-1","exit_code":3,"stdout":"hi"}`,
			func(ctx context.Context, c *Client) (any, error) {
				return c.ExecService(ctx, "web", ExecRequest{Cmd: []string{"echo", "hi"}})
			},
			"POST", "/v1/services/web/exec", `{"cmd":["echo","hi"]}`, ExecResult{Container: "web-1", ExitCode: 3, Stdout: "hi"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := recorder(t, http.StatusOK, "application/json", tc.answer)
			res, err := tc.call(context.Background(), testLocalClient(srv))
			if err != nil {
				t.Fatal(err)
			}
			checkCall(t, got, tc.method, tc.uri, tc.body, res, tc.want)
		})
	}
}

// TestLocalClientStreams pins the NDJSON calls and checks each line is
// decoded in order.
func TestLocalClientStreams(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		call   func(context.Context, *Client) ([]any, error)
		method string
		uri    string
		want   []any
	}{
		{"RunServiceStream", `{"image":{"machine":"m1","image":"nginx","status":"done"}}` + "\n" +
			`{"container":{"machine":"m1","action":"created"}}` + "\n" + `{"result":{"service":"web"}}` + "\n",
			func(ctx context.Context, c *Client) ([]any, error) {
				var out []any
				res, err := c.RunServiceStream(ctx, RunRequest{Image: "nginx"}, func(e RunEvent) error {
					if e.Image != nil {
						out = append(out, *e.Image)
					}
					if e.Container != nil {
						out = append(out, *e.Container)
					}
					return nil
				})
				return append(out, res), err
			},
			"POST", "/v1/services?stream=1",
			[]any{ImageProgress{Machine: "m1", Image: "nginx", Status: "done"}, ContainerResult{Machine: "m1", Action: "created"}, ServiceResult{Service: "web"}}},
		{"ServiceLogs", `{"container":"web-1","machine":"m1","text":"a"}` + "\n" + `{"container":"web-1","machine":"m1","text":"b"}` + "\n",
			func(ctx context.Context, c *Client) ([]any, error) {
				var out []any
				err := c.ServiceLogs(ctx, "web", LogsRequest{Follow: true, Tail: "10"}, func(l LogLine) error {
					out = append(out, l)
					return nil
				})
				return out, err
			},
			"GET", "/v1/services/web/logs?follow=true&tail=10",
			[]any{LogLine{Container: "web-1", Machine: "m1", Text: "a"}, LogLine{Container: "web-1", Machine: "m1", Text: "b"}}},
		{"Deploy", `{"plan":true,"service":"web","action":"create"}` + "\n",
			func(ctx context.Context, c *Client) ([]any, error) {
				var out []any
				err := c.Deploy(ctx, DeployRequest{DryRun: true}, func(e DeployEvent) error {
					out = append(out, e)
					return nil
				})
				return out, err
			},
			"POST", "/v1/deploy", []any{DeployEvent{Plan: true, Service: "web", Action: "create"}}},
		{"PushImage", `{"machine":"m2","bytes":10,"status":"sending"}` + "\n",
			func(ctx context.Context, c *Client) ([]any, error) {
				var out []any
				err := c.PushImage(ctx, PushRequest{Image: "app"}, func(p ImageProgress) error {
					out = append(out, p)
					return nil
				})
				return out, err
			},
			"POST", "/v1/images/push", []any{ImageProgress{Machine: "m2", Bytes: 10, Status: "sending"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := recorder(t, http.StatusOK, "application/x-ndjson", tc.answer)
			res, err := tc.call(context.Background(), testLocalClient(srv))
			if err != nil {
				t.Fatal(err)
			}
			if got.Method != tc.method || got.URI != tc.uri {
				t.Errorf("request = %s %s, want %s %s", got.Method, got.URI, tc.method, tc.uri)
			}
			if !reflect.DeepEqual(res, tc.want) {
				t.Errorf("lines = %#v, want %#v", res, tc.want)
			}
		})
	}
}

// TestLocalClientErrors checks that a refusal says which call failed on
// which agent, keeps the agent's words, and maps back to the sentinel.
func TestLocalClientErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		ctype    string
		answer   string
		call     func(context.Context, *Client) error
		wantCall string
		wantMsg  string
		wantIs   error
	}{
		{"json error answer", http.StatusNotFound, "application/json", `{"error":"not found: no machine named \"x\""}`,
			func(ctx context.Context, c *Client) error { _, err := c.RemoveMachine(ctx, "x"); return err },
			"RemoveMachine", `no machine named "x"`, ErrNotFound},
		{"conflict", http.StatusConflict, "application/json", `{"error":"conflict: name taken"}`,
			func(ctx context.Context, c *Client) error {
				_, err := c.UpdateMachine(ctx, "a", MachineUpdate{Name: "b"})
				return err
			},
			"UpdateMachine", "name taken", ErrConflict},
		{"plain text answer", http.StatusNotFound, "text/plain", "404 page not found\n",
			func(ctx context.Context, c *Client) error { _, err := c.Mesh(ctx); return err },
			"Mesh", "404 page not found", ErrNotFound},
		{"empty answer", http.StatusServiceUnavailable, "text/plain", "",
			func(ctx context.Context, c *Client) error { _, err := c.Status(ctx); return err },
			"Status", "503 Service Unavailable", ErrUnavailable},
		{"error line in a stream", http.StatusOK, "application/x-ndjson",
			`{"plan":true,"service":"web","action":"create"}` + "\n" + `{"error":"machine m2 is down"}` + "\n",
			func(ctx context.Context, c *Client) error {
				return c.Deploy(ctx, DeployRequest{}, func(DeployEvent) error { return nil })
			},
			"Deploy", "machine m2 is down", nil},
		{"bad request before a stream", http.StatusBadRequest, "application/json", `{"error":"bad request: no image"}`,
			func(ctx context.Context, c *Client) error {
				return c.PushImage(ctx, PushRequest{}, func(ImageProgress) error { return nil })
			},
			"PushImage", "no image", ErrBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := recorder(t, tc.status, tc.ctype, tc.answer)
			err := tc.call(context.Background(), testLocalClient(srv))
			var ce *CallError
			if !errors.As(err, &ce) {
				t.Fatalf("error = %v (%T), want a *CallError", err, err)
			}
			if ce.Call != tc.wantCall || ce.Target != "test.sock" {
				t.Errorf("call, target = %q, %q, want %q, test.sock", ce.Call, ce.Target, tc.wantCall)
			}
			// The agent answered: its words are the user's message.
			if !strings.Contains(err.Error(), tc.wantMsg) || strings.Contains(err.Error(), "test.sock") {
				t.Errorf("error = %q, want the agent's words %q and no socket", err, tc.wantMsg)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
		})
	}
}

// TestLocalClientCallbackErrorPassesThrough: an error from the caller's
// own line function is the caller's, not wrapped as the agent's.
func TestLocalClientCallbackErrorPassesThrough(t *testing.T) {
	srv, _ := recorder(t, http.StatusOK, "application/x-ndjson", `{"machine":"m2","status":"sending"}`+"\n")
	stop := errors.New("stdout closed")
	err := testLocalClient(srv).PushImage(context.Background(), PushRequest{Image: "app"}, func(ImageProgress) error { return stop })
	if err != stop {
		t.Fatalf("error = %v, want the callback's own", err)
	}
}

// TestLocalClientUnreachable: when nothing answers, the error names the
// call and where the agent was looked for.
func TestLocalClientUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	c, err := NewClient(sock, SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Status on ") || !strings.Contains(err.Error(), "absent.sock") {
		t.Fatalf("error = %v, want the call and the socket named", err)
	}
}

// A progress line with an error of its own (one machine failed) is
// handed on; only a line that is nothing but an error ends the stream.
func TestStreamProgressLineWithError(t *testing.T) {
	srv, _ := recorder(t, http.StatusOK, "application/x-ndjson",
		`{"machine":"m2","image":"app:1","status":"failed","error":"no space"}`+"\n"+
			`{"machine":"m3","image":"app:1","status":"done"}`+"\n"+`{"error":"the end"}`+"\n")
	var got []ImageProgress
	err := testLocalClient(srv).PushImage(context.Background(), PushRequest{Image: "app:1"}, func(p ImageProgress) error {
		got = append(got, p)
		return nil
	})
	if len(got) != 2 || got[0].Error != "no space" || got[1].Status != "done" {
		t.Fatalf("lines handed on: %+v", got)
	}
	if err == nil || !strings.Contains(err.Error(), "the end") {
		t.Fatalf("the closing error line: %v", err)
	}
}
