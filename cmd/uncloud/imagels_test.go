package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

func TestRenderImageCommands(t *testing.T) {
	tests := []struct {
		name    string
		render  func(*bytes.Buffer) error
		has     []string
		wantErr string
	}{
		{"ls names services, others, digests and machines not asked",
			func(b *bytes.Buffer) error {
				return renderImageList(b, api.ImageList{
					Images: []api.ImageInfo{
						{Machine: "m1", ID: "sha256:0123456789abcdef", Tags: []string{"web:1"}, Digests: []string{"web@sha256:fedcba9876543210"},
							Size: 3 << 20, Services: []string{"api", "web"}, OtherContainers: 1},
						{Machine: "m2", ID: "sha256:aaaabbbbccccdddd"},
					},
					Machines: []api.ImageMachine{{Machine: "m1", State: "ok", Truncated: true}, {Machine: "m3", State: "unreachable", Error: "machine m3 is down"}},
				})
			},
			[]string{"web:1   sha256:0123456789ab  sha256:fedcba987654  m1       3.0 MiB", "api,web,+1 other", "<none>  sha256:aaaabbbbcccc  -", "m3: unreachable: machine m3 is down", "m1: has more images than it lists"}, ""},
		{"rm says each machine and fails while one may keep it",
			func(b *bytes.Buffer) error {
				return renderRemove(b, api.ImageRemoveResult{Image: "web:1", Machines: []api.ImageRemoved{
					{ImageMachine: api.ImageMachine{Machine: "m1", State: "removed"}, Untagged: []string{"web:1"}, Deleted: []string{"sha256:0123456789abcdef"}},
					{ImageMachine: api.ImageMachine{Machine: "m2", State: "absent"}},
					{ImageMachine: api.ImageMachine{Machine: "m3", State: "unreachable", Error: "down"}},
				}})
			},
			[]string{"m1: removed web:1: untagged web:1; deleted 1 image(s) (sha256:0123456789ab)", "m2: does not have web:1", "m3: unreachable: down"},
			"web:1 may still be on m3 (unreachable)"},
		{"rm everywhere is no error",
			func(b *bytes.Buffer) error {
				return renderRemove(b, api.ImageRemoveResult{Image: "x", Machines: []api.ImageRemoved{{ImageMachine: api.ImageMachine{Machine: "m1", State: "removed"}}}})
			}, []string{"m1: removed x"}, ""},
		{"prune dry run",
			func(b *bytes.Buffer) error {
				return renderPrune(b, api.ImagePruneResult{DryRun: true, Machines: []api.ImagePruned{
					{ImageMachine: api.ImageMachine{Machine: "m1", State: "ok"}, Count: 3, Reclaimed: 2 << 20,
						Removed: []runtime.Image{{ID: "sha256:0123456789abcdef", Tags: []string{"old:1"}, Size: 1 << 20}}, Failed: []string{"x: in use"}},
				}})
			},
			[]string{"m1: would remove 3 image(s), about 2.0 MiB to reclaim", "  old:1 sha256:0123456789ab 1.0 MiB", "  and 2 more", "  kept x: in use"}, ""},
		{"prune fails when a machine was not pruned",
			func(b *bytes.Buffer) error {
				return renderPrune(b, api.ImagePruneResult{Machines: []api.ImagePruned{
					{ImageMachine: api.ImageMachine{Machine: "m1", State: "ok"}},
					{ImageMachine: api.ImageMachine{Machine: "m2", State: "failed", Error: "Docker is not available"}},
				}})
			},
			[]string{"m1: removed 0 image(s), about 0 B reclaimed", "m2: failed: Docker is not available"}, "not pruned: m2 (failed)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := tt.render(&b)
			for _, h := range tt.has {
				if !strings.Contains(b.String(), h) {
					t.Errorf("output lacks %q:\n%s", h, b.String())
				}
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && err.Error() != tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
