package main

import (
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

// Away from a terminal, a pull prints its milestones, not its bytes.
func TestImageProgressMilestones(t *testing.T) {
	var b strings.Builder
	p := newImageProgressTo(&b)
	for _, u := range []api.ImageProgress{
		{Machine: "m1", Image: "app:1", Status: "resolving"},
		{Machine: "m1", Image: "app:1", Status: "resolved", Digest: "sha256:0123456789abcdef0123"},
		{Machine: "m1", Image: "app:1", Status: "pulling", Layers: 3, Bytes: 10},
		{Machine: "m2", Image: "app:1", Status: "pulling", Layers: 3, Bytes: 10},
		{Machine: "m1", Image: "app:1", Status: "pulling", Layers: 3, LayersDone: 1, Bytes: 2000},
		{Machine: "m2", Image: "app:1", Status: "failed", Error: "unauthorized"},
		{Machine: "m2", Image: "app:1", Status: "pulling", Bytes: 99}, // after the end: ignored
		{Machine: "m1", Image: "app:1", Status: "done", Digest: "sha256:0123456789abcdef0123", Bytes: 3 << 20, Total: 3 << 20},
		{Machine: "m3", Image: "app:1", Status: "present"},
	} {
		p.Update(u)
	}
	p.Wait()
	got := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{
		"m1: resolving app:1",
		"m1: app:1 is sha256:0123456789abcdef0123",
		"m1: pulling 0/3 layers app:1",
		"m2: pulling 0/3 layers app:1",
		"m2: app:1 failed: unauthorized",
		"m1: app:1 ready sha256:0123456789ab (3.0 MiB / 3.0 MiB,",
		"m3: app:1 already there",
	}
	if len(got) != len(want) {
		t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d = %q, want %q…", i, got[i], want[i])
		}
	}
}
