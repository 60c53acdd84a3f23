package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

func testMachineClient(srv *httptest.Server) *MachineClient {
	return NewMachineClient(srv.Client(), func(id string) (string, error) {
		if id != "m1" {
			return "", fmt.Errorf("machine %s is not known here yet", id)
		}
		return srv.URL, nil
	})
}

// TestMachineClientCalls pins every machine API call to its method, path
// and body, literally: machines of two versions must keep understanding
// each other.
func TestMachineClientCalls(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		call   func(context.Context, *MachineClient) (any, error)
		method string
		uri    string
		body   string
		want   any
	}{
		{"Reserve", "",
			func(ctx context.Context, c *MachineClient) (any, error) {
				return nil, c.Reserve(ctx, "m1", ReserveRequest{Subnet: 7, MachineID: "new"})
			},
			"POST", "/v1/subnets/reserve", `{"subnet":7,"machine_id":"new"}`, nil},
		{"UpdateSelf", `{"id":"m1","name":"renamed"}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return c.UpdateSelf(ctx, "m1", MachineUpdate{Name: "renamed"})
			},
			"POST", "/v1/self", `{"name":"renamed"}`, &record.Machine{ID: "m1", Name: "renamed"}},
		{"Keyring", `{"epoch":2,"keys":["AQID"]}`,
			func(ctx context.Context, c *MachineClient) (any, error) { return c.Keyring(ctx, "m1") },
			"GET", "/v1/gossip/keyring", "", GossipKeyring{Epoch: 2, Keys: [][]byte{{1, 2, 3}}}},
		{"PushKeyring", "",
			func(ctx context.Context, c *MachineClient) (any, error) {
				return nil, c.PushKeyring(ctx, "m1", GossipKeyring{Epoch: 3, Keys: [][]byte{{1}}})
			},
			"POST", "/v1/gossip/keyring", `{"epoch":3,"keys":["AQ=="]}`, nil},
		{"RuntimeReady", `{}`,
			func(ctx context.Context, c *MachineClient) (any, error) { return nil, c.RuntimeReady(ctx, "m1") },
			"GET", "/v1/runtime/ready", "", nil},
		{"CreateContainer", `{"id":"c1","name":"web-1"}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return c.CreateContainer(ctx, "m1", runtime.ContainerSpec{Service: "web", Image: "nginx"})
			},
			"POST", "/v1/runtime/containers", `{"service":"web","image":"nginx"}`, &record.Container{ID: "c1", Name: "web-1"}},
		{"InspectContainer", `{"id":"c1","name":"web-1"}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return c.InspectContainer(ctx, "m1", "c1")
			},
			"GET", "/v1/runtime/containers/c1", "", &record.Container{ID: "c1", Name: "web-1"}},
		{"ContainerAction stop", `{}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return nil, c.ContainerAction(ctx, "m1", "c1", "stop")
			},
			"POST", "/v1/runtime/containers/c1/stop", "", nil},
		{"ContainerAction remove", `{}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return nil, c.ContainerAction(ctx, "m1", "c1", "remove")
			},
			"DELETE", "/v1/runtime/containers/c1", "", nil},
		{"ExecContainer", `{"exit_code":1,"stdout":"out","stderr":"err"}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return c.ExecContainer(ctx, "m1", "c1", []string{"ls", "/"})
			},
			"POST", "/v1/runtime/containers/c1/exec", `{"cmd":["ls","/"]}`,
			ContainerExecResult{ExitCode: 1, Stdout: "out", Stderr: "err"}},
		{"ContainerLogs", "2026-01-01T00:00:00Z a\n2026-01-01T00:00:01Z b\n",
			func(ctx context.Context, c *MachineClient) (any, error) {
				var lines []string
				err := c.ContainerLogs(ctx, "m1", "c1", LogsRequest{Since: "10m", Tail: "5"}, func(l string) error {
					lines = append(lines, l)
					return nil
				})
				return lines, err
			},
			"GET", "/v1/runtime/containers/c1/logs?follow=false&since=10m&tail=5", "",
			[]string{"2026-01-01T00:00:00Z a", "2026-01-01T00:00:01Z b"}},
		{"ImageID", `{"id":"sha256:abc"}`,
			func(ctx context.Context, c *MachineClient) (any, error) { return c.ImageID(ctx, "m1", "app:1.0") },
			"GET", "/v1/runtime/image?ref=app%3A1.0", "", "sha256:abc"},
		{"LoadImage", `{"loaded":"app:1.0"}`,
			func(ctx context.Context, c *MachineClient) (any, error) {
				return c.LoadImage(ctx, "m1", strings.NewReader("tarball bytes"), ImageLoad{Ref: "app:1.0", ID: "sha256:abc", Force: true})
			},
			"POST", "/v1/runtime/images?force=1&id=sha256%3Aabc&ref=app%3A1.0", "tarball bytes", "app:1.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := recorder(t, http.StatusOK, "application/json", tc.answer)
			res, err := tc.call(context.Background(), testMachineClient(srv))
			if err != nil {
				t.Fatal(err)
			}
			checkCall(t, got, tc.method, tc.uri, tc.body, res, tc.want)
		})
	}
}

// TestMachineClientErrors: the machine API refuses in plain text
// (http.Error); the error names the call and the machine, keeps the
// callee's words apart, and maps back to the sentinels.
func TestMachineClientErrors(t *testing.T) {
	tests := []struct {
		name       string
		machine    string
		status     int
		answer     string
		call       func(context.Context, *MachineClient, string) error
		wantCall   string
		wantStatus int // 0: no answer at all
		wantMsg    string
		wantIs     error
	}{
		{"conflict", "m1", http.StatusConflict, "subnet 7 is promised to other\n",
			func(ctx context.Context, c *MachineClient, m string) error {
				return c.Reserve(ctx, m, ReserveRequest{Subnet: 7, MachineID: "new"})
			},
			"Reserve", http.StatusConflict, "subnet 7 is promised to other", ErrConflict},
		{"image not there", "m1", http.StatusNotFound, "image app:1.0 not found\n",
			func(ctx context.Context, c *MachineClient, m string) error {
				_, err := c.ImageID(ctx, m, "app:1.0")
				return err
			},
			"ImageID", http.StatusNotFound, "image app:1.0 not found", ErrNotFound},
		{"docker down", "m1", http.StatusServiceUnavailable, "Docker is not available on m1\n",
			func(ctx context.Context, c *MachineClient, m string) error { return c.RuntimeReady(ctx, m) },
			"RuntimeReady", http.StatusServiceUnavailable, "Docker is not available on m1", ErrUnavailable},
		{"logs refused", "m1", http.StatusNotFound, "no such container c9\n",
			func(ctx context.Context, c *MachineClient, m string) error {
				return c.ContainerLogs(ctx, m, "c9", LogsRequest{}, func(string) error { return nil })
			},
			"ContainerLogs", http.StatusNotFound, "no such container c9", ErrNotFound},
		{"load refused", "m1", http.StatusInternalServerError, "disk full\n",
			func(ctx context.Context, c *MachineClient, m string) error {
				_, err := c.LoadImage(ctx, m, strings.NewReader("x"), ImageLoad{})
				return err
			},
			"LoadImage", http.StatusInternalServerError, "disk full", nil},
		{"unknown machine", "m9", http.StatusOK, "{}",
			func(ctx context.Context, c *MachineClient, m string) error { _, err := c.Keyring(ctx, m); return err },
			"Keyring", 0, "not known here yet", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := recorder(t, tc.status, "text/plain; charset=utf-8", tc.answer)
			err := tc.call(context.Background(), testMachineClient(srv), tc.machine)
			var ce *CallError
			if !errors.As(err, &ce) {
				t.Fatalf("error = %v (%T), want a *CallError", err, err)
			}
			if ce.Call != tc.wantCall || ce.Target != "machine "+tc.machine {
				t.Errorf("call, target = %q, %q, want %q, machine %s", ce.Call, ce.Target, tc.wantCall, tc.machine)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error = %q, want it to contain %q", err, tc.wantMsg)
			}
			var se *StatusError
			switch {
			case tc.wantStatus == 0 && errors.As(err, &se):
				t.Errorf("error carries an answer %v, want none", se)
			case tc.wantStatus != 0 && (!errors.As(err, &se) || se.Status != tc.wantStatus || se.Message != tc.wantMsg):
				t.Errorf("answer = %+v, want %d %q", se, tc.wantStatus, tc.wantMsg)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
		})
	}
}

// TestMachineClientLongHasNoAnswerTimeout: calls that wait on Docker go
// through a client without the quick calls' answer timeout.
func TestMachineClientLongHasNoAnswerTimeout(t *testing.T) {
	quick := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30e9}}
	c := NewMachineClient(quick, nil)
	if c.HTTP != quick {
		t.Fatal("quick calls do not use the given client")
	}
	tr, ok := c.Long.Transport.(*http.Transport)
	if !ok || tr.ResponseHeaderTimeout != 0 || tr == quick.Transport {
		t.Fatalf("long client transport = %+v, want a separate one without an answer timeout", c.Long.Transport)
	}
}
