package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestImageLsRmPrune: two machines, each with its own dockerd. A service
// runs on m2 only; `image ls` (asked on m1) shows the test image on both
// machines and the service on m2's row; `image rm` of it is refused,
// naming the service and m2, and removes nothing; `-m m1` removes it
// where nothing uses it. `image prune` removes a dangling image by
// default, an unused tagged one with --all, and never the used one.
// With m2's agent stopped, `image ls` names m2 as unreachable.
func TestImageLsRmPrune(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker)
	m1, m2 := c.engines[0].Client, c.engines[1].Client
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m2"); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "web", "-m", "m2", testimage.Tag); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	c.running(ctx, t, 0, "web", 1)
	echoID := lsImageID(ctx, t, m2, testimage.Tag)

	// On m2: an unused tagged image, and a dangling one (its tag moved to
	// a newer image, which stays tagged and unused).
	const spare, moved = "uncloud-test/spare:1", "uncloud-test/moved:1"
	lsImportFile(ctx, t, m2, "spare", spare)
	spareID := lsImageID(ctx, t, m2, spare)
	lsImportFile(ctx, t, m2, "moved, first", moved)
	danglingID := lsImageID(ctx, t, m2, moved)
	lsImportFile(ctx, t, m2, "moved, second", moved)
	movedID := lsImageID(ctx, t, m2, moved)

	t.Run("ls", func(t *testing.T) {
		var list api.ImageList
		if err := c.ucJSON(ctx, t, 0, &list, "image", "ls", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		if got := lsMachineStates(list.Machines); got != "m1=ok m2=ok" {
			t.Fatalf("machines %s", got)
		}
		rows := map[string]api.ImageInfo{}
		for _, i := range list.Images {
			rows[i.Machine+" "+i.ID] = i
		}
		onM1, onM2 := rows["m1 "+echoID], rows["m2 "+echoID]
		if onM1.ID == "" || len(onM1.Services) != 0 || onM1.InUse != 0 {
			t.Errorf("m1's row of the test image: %+v, want it present and unused", onM1)
		}
		if !slices.Equal(onM2.Services, []string{"web"}) || onM2.InUse != 1 || len(onM2.Containers) != 1 ||
			onM2.Containers[0].State != "running" || !slices.Contains(onM2.Tags, testimage.Tag) || onM2.Size <= 0 || onM2.Created.IsZero() {
			t.Errorf("m2's row of the test image: %+v, want web's running container, tag, size, created", onM2)
		}
		if d := rows["m2 "+danglingID]; d.ID == "" || len(d.Tags) != 0 {
			t.Errorf("the dangling image on m2: %+v", d)
		}
		if _, ok := rows["m1 "+spareID]; ok {
			t.Errorf("m1 lists m2's spare image")
		}
		// The JSON names its fields as documented.
		out, err := c.uncloud(ctx, t, 0, "image", "ls", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var raw struct {
			Images   []map[string]any `json:"images"`
			Machines []map[string]any `json:"machines"`
		}
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatal(err)
		}
		for _, row := range raw.Images {
			if row["id"] != echoID || row["machine"] != "m2" {
				continue
			}
			for _, k := range []string{"machine", "machine_id", "id", "tags", "size", "created", "services", "containers", "in_use"} {
				if _, ok := row[k]; !ok {
					t.Errorf("--output json row lacks %q: %v", k, row)
				}
			}
		}
		if len(raw.Machines) != 2 || raw.Machines[0]["state"] != "ok" {
			t.Errorf("--output json machines: %v", raw.Machines)
		}
		table, err := c.uncloud(ctx, t, 0, "image", "ls")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("image ls:\n%s", table)
		if !lsTableRow(table, testimage.Tag, "m2", "web") || !lsTableRow(table, testimage.Tag, "m1") {
			t.Errorf("table lacks the test image's rows on m1 and m2 (with web):\n%s", table)
		}
	})

	t.Run("rm of a used image is refused", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "image", "rm", testimage.Tag)
		msg := fmt.Sprint(err) + out
		t.Logf("image rm: %s", msg)
		if err == nil || !strings.Contains(msg, "service web") || !strings.Contains(msg, "m2") || !strings.Contains(msg, "nothing was removed") {
			t.Fatalf("rm of web's image: %v\n%s", err, out)
		}
		if lsImageID(ctx, t, m1, testimage.Tag) != echoID || lsImageID(ctx, t, m2, testimage.Tag) != echoID {
			t.Fatal("a refused rm removed the image")
		}
	})

	t.Run("rm -m m1 removes it where nothing uses it", func(t *testing.T) {
		var res api.ImageRemoveResult
		if err := c.ucJSON(ctx, t, 0, &res, "image", "rm", testimage.Tag, "-m", "m1", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		if len(res.Machines) != 1 || res.Machines[0].State != "removed" || !slices.Contains(res.Machines[0].Deleted, echoID) {
			t.Fatalf("rm -m m1: %+v", res)
		}
		if lsHasImage(ctx, t, m1, echoID) || !lsHasImage(ctx, t, m2, echoID) {
			t.Fatal("rm -m m1 did not remove it from m1 alone")
		}
	})

	t.Run("prune", func(t *testing.T) {
		var dry api.ImagePruneResult
		if err := c.ucJSON(ctx, t, 0, &dry, "image", "prune", "--all", "--dry-run", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		if got := lsPrunedIDs(dry, "m2"); !slices.Equal(got, lsSortedIDs(spareID, danglingID, movedID)) {
			t.Errorf("dry run --all on m2 would remove %v, want spare, dangling and moved", got)
		}
		if !lsHasImage(ctx, t, m2, spareID) || !lsHasImage(ctx, t, m2, danglingID) {
			t.Fatal("a dry run removed images")
		}

		var def api.ImagePruneResult
		if err := c.ucJSON(ctx, t, 0, &def, "image", "prune", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		if got := lsPrunedIDs(def, "m2"); !slices.Equal(got, []string{danglingID}) {
			t.Errorf("default prune on m2 removed %v, want the dangling image only", got)
		}
		if lsHasImage(ctx, t, m2, danglingID) || !lsHasImage(ctx, t, m2, spareID) || !lsHasImage(ctx, t, m2, movedID) {
			t.Fatal("default prune: the dangling image should be gone, the tagged ones kept")
		}

		out, err := c.uncloud(ctx, t, 0, "image", "prune", "--all", "-m", "m2")
		if err != nil {
			t.Fatalf("prune --all: %v\n%s", err, out)
		}
		t.Logf("image prune --all -m m2:\n%s", out)
		if !strings.Contains(out, "m2: removed 2 image(s)") || !strings.Contains(out, spare) {
			t.Errorf("prune --all said:\n%s", out)
		}
		if lsHasImage(ctx, t, m2, spareID) || lsHasImage(ctx, t, m2, movedID) {
			t.Error("prune --all kept an unused image")
		}
		if !lsHasImage(ctx, t, m2, echoID) {
			t.Fatal("prune --all removed the image web's container uses")
		}
		c.running(ctx, t, 0, "web", 1)
	})

	t.Run("rm --force still obeys Docker", func(t *testing.T) {
		// By ID, the image itself: Docker will not delete an image a
		// running container uses, forced or not, and the user reads why.
		out, err := c.uncloud(ctx, t, 0, "image", "rm", echoID, "--force", "-m", "m2")
		msg := fmt.Sprint(err) + out
		t.Logf("image rm --force: %s", msg)
		if err == nil || !strings.Contains(out, "m2: refused:") || !strings.Contains(msg, "Docker said") || !strings.Contains(msg, "running container") {
			t.Fatalf("forced rm of a running container's image: %v\n%s", err, out)
		}
		if !lsHasImage(ctx, t, m2, echoID) {
			t.Fatal("the image a running container uses is gone")
		}
	})

	t.Run("an unreachable machine is named", func(t *testing.T) {
		if err := c.procs[1].Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		var list api.ImageList
		if err := c.ucJSON(ctx, t, 0, &list, "image", "ls", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		if got := lsMachineStates(list.Machines); got != "m1=ok m2=unreachable" {
			t.Fatalf("machines %s, want m2 unreachable: %+v", got, list.Machines)
		}
		table, err := c.uncloud(ctx, t, 0, "image", "ls")
		t.Logf("image ls, m2 stopped:\n%s", table)
		if err != nil || !strings.Contains(table, "m2: unreachable") {
			t.Fatalf("table: %v\n%s", err, table)
		}
	})
}

// lsImportFile imports a one-file image whose content makes its ID.
func lsImportFile(ctx context.Context, t *testing.T, c *client.Client, content, tag string) {
	t.Helper()
	if err := testimage.Import(ctx, c, testimage.FileTarball(content), tag); err != nil {
		t.Fatal(err)
	}
}

func lsImageID(ctx context.Context, t *testing.T, c *client.Client, ref string) string {
	t.Helper()
	img, err := c.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	return img.ID
}

func lsHasImage(ctx context.Context, t *testing.T, c *client.Client, id string) bool {
	t.Helper()
	_, err := c.ImageInspect(ctx, id)
	if err != nil && !errdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func lsMachineStates(ms []api.ImageMachine) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Machine+"="+m.State)
	}
	return strings.Join(out, " ")
}

func lsPrunedIDs(res api.ImagePruneResult, machine string) []string {
	var out []string
	for _, m := range res.Machines {
		if m.Machine == machine {
			for _, img := range m.Removed {
				out = append(out, img.ID)
			}
		}
	}
	slices.Sort(out)
	return out
}

func lsSortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// lsTableRow says whether one line of table has every field.
func lsTableRow(table string, fields ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && !slices.ContainsFunc(fields, func(w string) bool { return !slices.Contains(f, w) }) {
			return true
		}
	}
	return false
}
