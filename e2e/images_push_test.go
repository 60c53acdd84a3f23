package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

const mib = 1 << 20

// meshTo counts what host from sends to host to on the wire (WireGuard,
// every header included).
func meshTo(ctx context.Context, t *testing.T, from, to *lab.Host) *lab.Counter {
	t.Helper()
	c, err := from.CountEgress(ctx, "ip daddr "+to.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func counted(ctx context.Context, t *testing.T, c *lab.Counter) int64 {
	t.Helper()
	n, err := c.Bytes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return int64(n)
}

// tempNames are the image names a push leaves behind that it should not:
// the loopback registry's.
func tempNames(ctx context.Context, t *testing.T, d *lab.Docker) []string {
	t.Helper()
	list, err := d.Client.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, img := range list {
		for _, n := range append(img.RepoTags, img.RepoDigests...) {
			if strings.HasPrefix(n, "127.0.0.1:") {
				out = append(out, n)
			}
		}
	}
	return out
}

// fetchedBytes is the size of the whole blobs host h fetched for a pull
// that has not finished.
func fetchedBytes(t *testing.T, h *lab.Host) int64 {
	t.Helper()
	var n int64
	for _, b := range fetchedBlobs(t, h) {
		if st, err := os.Stat(filepath.Join(h.Dir, "lib", "registry", "fetched", "sha256", b)); err == nil {
			n += st.Size()
		}
	}
	return n
}

func fetchedBlobs(t *testing.T, h *lab.Host) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(h.Dir, "lib", "registry", "fetched", "sha256"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestImagePush: three machines, each with its own Docker Engine. A
// second version of an image that changes only its top layer sends only
// that layer (counted on the wire); a push killed midway leaves no image
// and the next one resumes with what arrived; an image for another
// platform is refused with both platforms named.
func TestImagePush(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker, withDocker)
	src := c.engines[0]
	base := []testimage.Layer{{Name: "base1", Size: 4 * mib, Seed: 1}, {Name: "base2", Size: 4 * mib, Seed: 2}, {Name: "base3", Size: 4 * mib, Seed: 3}}
	load := func(t *testing.T, tag, arch string, layers []testimage.Layer) string {
		t.Helper()
		id, err := testimage.LoadLayered(ctx, src.Client, tag, arch, layers)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	to2, to3 := meshTo(ctx, t, c.hosts[0], c.hosts[1]), meshTo(ctx, t, c.hosts[0], c.hosts[2])
	push := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		start := time.Now()
		out, err := c.uncloud(ctx, t, 0, append([]string{"image", "push"}, args...)...)
		t.Logf("uncloud image push %s: %v\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
		return out, err
	}
	hasImage := func(t *testing.T, i int, tag, want string) {
		t.Helper()
		img, err := c.engines[i].Client.ImageInspect(ctx, tag)
		if err != nil {
			t.Fatalf("%s lacks %s after the push: %v", c.hosts[i].Name, tag, err)
		}
		if img.ID != want {
			t.Fatalf("%s's %s is %s, want %s", c.hosts[i].Name, tag, img.ID, want)
		}
	}

	if !t.Run("second version sends only its new top layer", func(t *testing.T) {
		v1 := load(t, "uncloud-test/app:1", "amd64", append(base, testimage.Layer{Name: "top", Size: mib, Seed: 10}))
		v2 := load(t, "uncloud-test/app:2", "amd64", append(base, testimage.Layer{Name: "top", Size: mib, Seed: 11}))
		b2, b3 := counted(ctx, t, to2), counted(ctx, t, to3)
		if out, err := push(t, "uncloud-test/app:1", "-m", "m2,m3"); err != nil || !strings.Contains(out, "m2: uncloud-test/app:1 ready") {
			t.Fatalf("push of app:1: %v\n%s", err, out)
		}
		first2, first3 := counted(ctx, t, to2)-b2, counted(ctx, t, to3)-b3
		t.Logf("app:1 (13 MiB of layers): %.2f MiB on the wire to m2, %.2f MiB to m3", float64(first2)/mib, float64(first3)/mib)
		if first2 < 13*mib || first3 < 13*mib {
			t.Fatalf("the first push carried %d and %d bytes, less than its 13 MiB of layers: the counters do not count it", first2, first3)
		}
		hasImage(t, 1, "uncloud-test/app:1", v1)
		hasImage(t, 2, "uncloud-test/app:1", v1)

		b2, b3 = counted(ctx, t, to2), counted(ctx, t, to3)
		if out, err := push(t, "uncloud-test/app:2", "-m", "m2,m3"); err != nil || !strings.Contains(out, "m3: uncloud-test/app:2 ready") {
			t.Fatalf("push of app:2: %v\n%s", err, out)
		}
		second2, second3 := counted(ctx, t, to2)-b2, counted(ctx, t, to3)-b3
		t.Logf("app:2 (only its 1 MiB top layer is new): %.3f MiB on the wire to m2, %.3f MiB to m3", float64(second2)/mib, float64(second3)/mib)
		// The new layer is random (it compresses to about its size), plus
		// manifest, config and every header down to WireGuard's.
		for _, got := range []int64{second2, second3} {
			if float64(got) > 1.2*mib {
				t.Errorf("the second version carried %d bytes to a machine, more than 1.2× its 1 MiB new layer", got)
			}
		}
		hasImage(t, 1, "uncloud-test/app:2", v2)
		hasImage(t, 2, "uncloud-test/app:2", v2)
		// The temporary names and fetched blobs go just after the push says
		// it is done.
		eventuallyE2E(t, "no temporary names or fetched blobs left", 10*time.Second, func() error {
			for i := range 3 {
				if names := tempNames(ctx, t, c.engines[i]); len(names) > 0 {
					return fmt.Errorf("%s keeps the push's temporary names: %v", c.hosts[i].Name, names)
				}
				if b := fetchedBlobs(t, c.hosts[i]); len(b) > 0 {
					return fmt.Errorf("%s keeps fetched blobs after a pull that worked: %v", c.hosts[i].Name, b)
				}
			}
			return nil
		})
		// Pushed again: present everywhere, nothing sent.
		if out, err := push(t, "uncloud-test/app:2"); err != nil || !strings.Contains(out, "m2: uncloud-test/app:2 already there") {
			t.Fatalf("second push of app:2: %v\n%s", err, out)
		}
	}) {
		return
	}

	t.Run("a push killed midway leaves no image and the next one resumes", func(t *testing.T) {
		layers := append(base, testimage.Layer{Name: "small1", Size: 4 * mib, Seed: 20},
			testimage.Layer{Name: "small2", Size: 8 * mib, Seed: 21}, testimage.Layer{Name: "big", Size: 40 * mib, Seed: 22})
		v3 := load(t, "uncloud-test/app:3", "amd64", layers)
		// m2 has the base layers (app:1); 52 MiB are new. The source's
		// link is slowed so that the kill lands midway.
		if _, err := c.hosts[0].Run(ctx, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "40mbit", "burst", "64kb", "latency", "500ms"); err != nil {
			t.Fatal(err)
		}
		defer c.hosts[0].Run(ctx, "tc", "qdisc", "del", "dev", "eth0", "root")
		before := counted(ctx, t, to2)
		cli := c.hosts[0].Command(ctx, c.lab.Uncloud, "image", "push", "uncloud-test/app:3", "-m", "m2")
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		// Killed once both small layers are whole on m2 (Docker fetches
		// three at a time, so the big one is on its way then).
		deadline := time.Now().Add(60 * time.Second)
		for fetchedBytes(t, c.hosts[1]) < 12*mib {
			if time.Now().After(deadline) {
				cli.Process.Kill()
				cli.Wait()
				t.Fatalf("m2 has only %d bytes of whole blobs after 60 s", fetchedBytes(t, c.hosts[1]))
			}
			time.Sleep(20 * time.Millisecond)
		}
		cli.Process.Signal(syscall.SIGKILL)
		cli.Wait()
		killedAt := counted(ctx, t, to2) - before
		t.Logf("CLI killed after %.1f MiB reached m2", float64(killedAt)/mib)
		// The pull stops (Docker's pull is cancelled with the call); no
		// image has the name, no temporary name stays.
		eventuallyE2E(t, "m2's pull to stop", 30*time.Second, func() error {
			a := counted(ctx, t, to2)
			time.Sleep(time.Second)
			if b := counted(ctx, t, to2); b-a > 64<<10 {
				return fmt.Errorf("still %d bytes a second to m2", b-a)
			}
			return nil
		})
		if _, err := c.engines[1].Client.ImageInspect(ctx, "uncloud-test/app:3"); err == nil {
			t.Fatal("m2 has uncloud-test/app:3 after a push killed midway")
		}
		if names := tempNames(ctx, t, c.engines[1]); len(names) > 0 {
			t.Errorf("m2 keeps the killed push's temporary names: %v", names)
		}
		kept := fetchedBlobs(t, c.hosts[1])
		t.Logf("m2 kept %d whole blobs for the next push", len(kept))
		if len(kept) == 0 {
			t.Error("m2 kept no blob of the killed push to resume with")
		}
		c.hosts[0].Run(ctx, "tc", "qdisc", "del", "dev", "eth0", "root")

		before = counted(ctx, t, to2)
		if out, err := push(t, "uncloud-test/app:3", "-m", "m2"); err != nil || !strings.Contains(out, "m2: uncloud-test/app:3 ready") {
			t.Fatalf("push after the killed one: %v\n%s", err, out)
		}
		resumed := counted(ctx, t, to2) - before
		t.Logf("the next push carried %.1f MiB of the 52 MiB new", float64(resumed)/mib)
		// 40 MiB still missing, and the headers (7% in the first subtest).
		if resumed > 44*mib {
			t.Errorf("the next push carried %d bytes, more than 1.1× the 40 MiB that had not arrived: it did not resume with the 12 MiB that had", resumed)
		}
		hasImage(t, 1, "uncloud-test/app:3", v3)
		eventuallyE2E(t, "m2's fetched blobs removed", 10*time.Second, func() error {
			if b := fetchedBlobs(t, c.hosts[1]); len(b) > 0 {
				return fmt.Errorf("m2 keeps fetched blobs after the pull worked: %v", b)
			}
			return nil
		})
	})

	t.Run("an image for another platform is refused, naming both", func(t *testing.T) {
		load(t, "uncloud-test/arm:1", "arm64", []testimage.Layer{{Name: "arm", Size: 64 << 10, Seed: 30}})
		out, err := push(t, "uncloud-test/arm:1", "-m", "m2")
		if err == nil || !strings.Contains(out, "m2: uncloud-test/arm:1 failed: image uncloud-test/arm:1 is linux/arm64, machine m2 is linux/amd64") {
			t.Fatalf("push of an arm64 image to amd64 m2: %v\n%s", err, out)
		}
		if _, err := c.engines[1].Client.ImageInspect(ctx, "uncloud-test/arm:1"); err == nil {
			t.Fatal("m2 has the refused image")
		}
	})
}
