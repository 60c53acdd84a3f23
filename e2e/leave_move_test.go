package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestLeaveMove: m2 of three machines with Docker runs web's only
// replica. `leave --move` is refused while a service pinned to m2 cannot
// move, and nothing changes; without it, web's replica starts on m1 or
// m3 (healthy) before m2 is removed, and web keeps its one replica.
func TestLeaveMove(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "web", "-m", "m2", testimage.Tag); err != nil {
		t.Fatalf("run web: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "pinned", "--constraint", "node.hostname==m2", testimage.Tag); err != nil {
		t.Fatalf("run pinned: %v\n%s", err, out)
	}
	old := c.running(ctx, t, 0, "web", 1)[0]
	if old.Machine != "m2" {
		t.Fatalf("web runs on %s, want m2", old.Machine)
	}
	c.running(ctx, t, 0, "pinned", 1)

	leave := []string{"leave", "--move", "--yes", "--docker-host", c.engines[1].DockerHost()}
	out, err := c.uncloud(ctx, t, 1, leave...)
	if err == nil || !strings.Contains(out, "no other machine can take pinned") || !strings.Contains(out, "move: "+old.Name+" (web) → a new replica on m") {
		t.Fatalf("leave --move with a service pinned to m2: %v\n%s", err, out)
	}
	t.Logf("refused:\n%s", out)
	if !c.procs[1].Alive() || len(c.machines(ctx, t, 0)) != 3 {
		t.Fatal("a refused leave --move changed the network")
	}
	if cs := c.running(ctx, t, 0, "web", 1); cs[0].ID != old.ID {
		t.Fatalf("a refused leave --move changed web: %+v", cs)
	}
	if out, err := c.uncloud(ctx, t, 0, "rm", "pinned"); err != nil {
		t.Fatalf("rm pinned: %v\n%s", err, out)
	}

	start := time.Now()
	out, err = c.uncloud(ctx, t, 1, leave...)
	t.Logf("leave --move on m2 took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("leave --move: %v", err)
	}
	moved, network := strings.Index(out, "✓ move: "+old.Name+" (web) now runs as"), strings.Index(out, "✓ network:")
	if moved < 0 || network < 0 || moved > network {
		t.Fatalf("want the move done before the removal from the network:\n%s", out)
	}
	select {
	case <-c.procs[1].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("m2's agent still runs after leave")
	}
	cs := c.running(ctx, t, 0, "web", 1)
	if cs[0].Machine != "m1" && cs[0].Machine != "m3" || cs[0].ID == old.ID {
		t.Fatalf("web after leave --move: %+v", cs)
	}
}
