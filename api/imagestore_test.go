package api

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/runtime"
)

// TestImageStoreCalls pins the image commands' calls, local and machine
// API, to their method, path and body (literal strings: the wire format).
func TestImageStoreCalls(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		answer string
		call   func(*Client, *MachineClient) (any, error)
		method string
		uri    string
		body   string
		want   any
	}{
		{"ListImages", `{"images":[{"machine":"m1","machine_id":"id1","id":"sha256:a","tags":["web:1"],"size":5,"services":["web"],"in_use":1}],"machines":[{"machine":"m1","machine_id":"id1","state":"ok"}]}`,
			func(c *Client, _ *MachineClient) (any, error) {
				return c.ListImages(ctx, ImageListRequest{Machines: []string{"m1", "m2"}})
			},
			"GET", "/v1/images/ls?machine=m1&machine=m2", "",
			ImageList{Images: []ImageInfo{{Machine: "m1", MachineID: "id1", ID: "sha256:a", Tags: []string{"web:1"}, Size: 5, Services: []string{"web"}, InUse: 1}},
				Machines: []ImageMachine{{Machine: "m1", MachineID: "id1", State: "ok"}}}},
		{"RemoveImage", `{"image":"web:1","machines":[{"machine":"m1","machine_id":"id1","state":"removed","id":"sha256:a"}]}`,
			func(c *Client, _ *MachineClient) (any, error) {
				return c.RemoveImage(ctx, ImageRemoveRequest{Image: "web:1", Force: true})
			},
			"POST", "/v1/images/rm", `{"image":"web:1","force":true}`,
			ImageRemoveResult{Image: "web:1", Machines: []ImageRemoved{{ImageMachine: ImageMachine{Machine: "m1", MachineID: "id1", State: "removed"}, ID: "sha256:a"}}}},
		{"PruneImages", `{"machines":[{"machine":"m1","machine_id":"id1","state":"ok","count":1,"reclaimed":7}]}`,
			func(c *Client, _ *MachineClient) (any, error) {
				return c.PruneImages(ctx, ImagePruneRequest{All: true, DryRun: true})
			},
			"POST", "/v1/images/prune", `{"all":true,"dry_run":true}`,
			ImagePruneResult{Machines: []ImagePruned{{ImageMachine: ImageMachine{Machine: "m1", MachineID: "id1", State: "ok"}, Count: 1, Reclaimed: 7}}}},
		{"ListMachineImages", `{"images":[{"id":"sha256:a","size":5,"in_use":1,"users":[{"service":"web","container":"web-1","state":"running"}]}],"truncated":true}`,
			func(_ *Client, m *MachineClient) (any, error) { return m.ListMachineImages(ctx, "m1") },
			"GET", "/v1/runtime/images/ls", "",
			runtime.ImageList{Images: []runtime.Image{{ID: "sha256:a", Size: 5, InUse: 1, Users: []runtime.ImageUser{{Service: "web", Container: "web-1", State: "running"}}}}, Truncated: true}},
		{"RemoveMachineImage", `{"id":"sha256:a","deleted":["sha256:a"]}`,
			func(_ *Client, m *MachineClient) (any, error) {
				return m.RemoveMachineImage(ctx, "m1", MachineImageRemove{Ref: "web:1", Check: true})
			},
			"POST", "/v1/runtime/images/rm", `{"ref":"web:1","check":true}`,
			runtime.ImageRemoval{ID: "sha256:a", Deleted: []string{"sha256:a"}}},
		{"PruneMachineImages", `{"count":2,"reclaimed":9,"dry_run":true}`,
			func(_ *Client, m *MachineClient) (any, error) {
				return m.PruneMachineImages(ctx, "m1", runtime.PruneOptions{All: true, DryRun: true})
			},
			"POST", "/v1/runtime/images/prune", `{"all":true,"dry_run":true}`,
			runtime.PruneReport{Count: 2, Reclaimed: 9, DryRun: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, got := recorder(t, 200, "application/json", tt.answer)
			res, err := tt.call(testLocalClient(srv), testMachineClient(srv))
			if err != nil {
				t.Fatal(err)
			}
			checkCall(t, got, tt.method, tt.uri, tt.body, res, tt.want)
		})
	}
}

// TestImageStoreRefusalsAndBounds: a refusal keeps its status and words
// through the local API; a machine answer larger than MaxImageAnswer is
// an error that says so, not a partial listing.
func TestImageStoreRefusalsAndBounds(t *testing.T) {
	ctx := context.Background()
	srv, _ := recorder(t, 409, "application/json", `{"error":"conflict: web:1 is used on m1 by service web"}`)
	_, err := testLocalClient(srv).RemoveImage(ctx, ImageRemoveRequest{Image: "web:1"})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "service web") {
		t.Fatalf("refusal = %v", err)
	}
	big := `{"images":[{"id":"` + strings.Repeat("a", MaxImageAnswer) + `"}]}`
	srv2, _ := recorder(t, 200, "application/json", big)
	if _, err := testMachineClient(srv2).ListMachineImages(ctx, "m1"); err == nil || !strings.Contains(err.Error(), "at most 8 MiB") {
		t.Fatalf("an oversized answer: %v", err)
	}
	// The real router serves the three routes.
	h := httptest.NewServer(NewLocalHandler(&fakeImageAgent{}))
	defer h.Close()
	res, err := testLocalClient(h).ListImages(ctx, ImageListRequest{Machines: []string{"m2"}})
	if err != nil || len(res.Machines) != 1 || res.Machines[0].Machine != "m2" {
		t.Fatalf("ListImages through the handler = %+v, %v", res, err)
	}
	if _, err := testLocalClient(h).PruneImages(ctx, ImagePruneRequest{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("PruneImages through the handler = %v, want ErrUnavailable", err)
	}
}

type fakeImageAgent struct {
	fakeAgent
}

func (fakeImageAgent) ListImages(_ context.Context, req ImageListRequest) (ImageList, error) {
	var ms []ImageMachine
	for _, m := range req.Machines {
		ms = append(ms, ImageMachine{Machine: m, State: "ok"})
	}
	return ImageList{Machines: ms}, nil
}

func (fakeImageAgent) RemoveImage(context.Context, ImageRemoveRequest) (ImageRemoveResult, error) {
	return ImageRemoveResult{}, nil
}

func (fakeImageAgent) PruneImages(context.Context, ImagePruneRequest) (ImagePruneResult, error) {
	return ImagePruneResult{}, ErrUnavailable
}
