package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

func TestMovedTags(t *testing.T) {
	before := map[string]string{"app:1": "sha256:a", "db:2": "sha256:d", "gone:1": "sha256:g"}
	after := map[string]string{"app:1": "sha256:b", "db:2": "sha256:d", "new:1": "sha256:n"}
	got := movedTags(before, after)
	if len(got) != 1 || got["app:1"] != "sha256:a" {
		t.Fatalf("movedTags = %v, want app:1 moved from sha256:a", got)
	}
}

// oneFileImage is a tiny root file system whose content makes its own
// image ID.
func oneFileImage(t *testing.T, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "content", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(content))
	tw.Close()
	return buf.Bytes()
}

// TestDockerLoadKeepsOtherTags: a pushed tarball whose tag names another
// image here does not take the tag over (the tag is put back and the
// load refused with ErrImageRetag) unless forced.
func TestDockerLoadKeepsOtherTags(t *testing.T) {
	c := needDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt := &Runtime{docker: c, cfg: Config{MachineName: "m-load"}}
	tag := fmt.Sprintf("uncloud-test/retag:%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ids := map[string]bool{}
		list, _ := c.ImageList(context.Background(), image.ListOptions{All: true})
		for _, img := range list {
			for _, rt := range img.RepoTags {
				if strings.HasPrefix(rt, "uncloud-test/retag:") || strings.HasPrefix(rt, "uncloud-test/retag-other:") {
					ids[img.ID] = true
				}
			}
		}
		for id := range ids {
			c.ImageRemove(context.Background(), id, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	// The pusher's image: imported, saved, then this machine's own image
	// takes the tag.
	if err := testimage.Import(ctx, c, oneFileImage(t, "the pusher's"), tag); err != nil {
		t.Fatal(err)
	}
	pushed, _ := rt.ImageID(ctx, tag)
	saved, err := rt.SaveImage(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := io.ReadAll(saved)
	saved.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.Import(ctx, c, oneFileImage(t, "this machine's"), tag); err != nil {
		t.Fatal(err)
	}
	mine, _ := rt.ImageID(ctx, tag)
	if mine == pushed {
		t.Fatal("the two test images have one ID")
	}

	_, err = rt.LoadImage(ctx, bytes.NewReader(tarball), LoadOptions{})
	if !errors.Is(err, ErrImageRetag) || !strings.Contains(err.Error(), tag) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("load over another image's tag: %v, want ErrImageRetag naming %s and --force", err, tag)
	}
	if now, _ := rt.ImageID(ctx, tag); now != mine {
		t.Fatalf("after a refused load %s is %s, want this machine's %s", tag, now, mine)
	}
	if _, err := rt.LoadImage(ctx, bytes.NewReader(tarball), LoadOptions{Force: true}); err != nil {
		t.Fatalf("forced load: %v", err)
	}
	if now, _ := rt.ImageID(ctx, tag); now != pushed {
		t.Fatalf("after a forced load %s is %s, want the pushed %s", tag, now, pushed)
	}
	// A load that moves nothing is no retag.
	if _, err := rt.LoadImage(ctx, bytes.NewReader(tarball), LoadOptions{}); err != nil {
		t.Fatalf("loading the same image again: %v", err)
	}
}
