package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

func TestImageUsage(t *testing.T) {
	const me = "machine-1"
	uc := func(id, svc, name, state string) container.Summary {
		return container.Summary{ImageID: id, Names: []string{"/" + name}, State: state,
			Labels: map[string]string{LabelMachine: me, LabelService: svc}}
	}
	imgs := []image.Summary{
		{ID: "sha256:b", RepoTags: []string{"web:2", "web:latest"}, RepoDigests: []string{"web@sha256:d"}, Size: 10, Created: 1700000000},
		{ID: "sha256:a", RepoTags: []string{"<none>:<none>"}, RepoDigests: []string{"<none>@<none>"}, Size: 5},
		{ID: "sha256:c", RepoTags: []string{"db:1"}, Size: 7},
		{ID: "sha256:e", RepoDigests: []string{"cache@sha256:e"}, Size: 3},
	}
	cs := []container.Summary{
		uc("sha256:b", "web", "web-2", "running"),
		uc("sha256:b", "web", "web-1", "exited"),
		// Another machine's label (a copied disk) and no label at all:
		// both are someone else's.
		{ImageID: "sha256:c", Labels: map[string]string{LabelMachine: "machine-2", LabelService: "db"}},
		{ImageID: "sha256:c"},
		{ImageID: "sha256:gone"}, // its image is not listed
	}
	got := imageUsage(imgs, cs, me)
	tests := []struct {
		name                    string
		i                       int
		id, tags, digests, user string
		inUse, others           int
		dangling, used          bool
	}{
		{"named before unnamed, sorted by name", 0, "sha256:e", "", "cache@sha256:e", "", 0, 0, true, false},
		{"uncloud users sorted, all counted", 2, "sha256:b", "web:2,web:latest", "web@sha256:d", "web/web-1/exited,web/web-2/running", 2, 0, false, true},
		{"others' containers are counted apart", 1, "sha256:c", "db:1", "", "", 0, 2, false, true},
		{"Docker's placeholders are no names", 3, "sha256:a", "", "", "", 0, 0, true, false},
	}
	if len(got.Images) != 4 || got.Truncated {
		t.Fatalf("imageUsage = %+v, want 4 images", got)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := got.Images[tt.i]
			var users []string
			for _, u := range img.Users {
				users = append(users, u.Service+"/"+u.Container+"/"+u.State)
			}
			if img.ID != tt.id || strings.Join(img.Tags, ",") != tt.tags || strings.Join(img.Digests, ",") != tt.digests ||
				strings.Join(users, ",") != tt.user || img.InUse != tt.inUse || img.Others != tt.others ||
				img.Dangling() != tt.dangling || img.Used() != tt.used {
				t.Errorf("image %d = %+v (dangling %v, used %v), want %+v", tt.i, img, img.Dangling(), img.Used(), tt)
			}
		})
	}
	if c := got.Images[2].Created; !c.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created = %v", c)
	}
}

func TestImageUsageBounds(t *testing.T) {
	var imgs []image.Summary
	var cs []container.Summary
	tags := make([]string, MaxImageNames+5)
	for i := range tags {
		tags[i] = fmt.Sprintf("many:%03d", i)
	}
	imgs = append(imgs, image.Summary{ID: "sha256:many", RepoTags: tags})
	for i := range MaxImageUsers + 10 {
		cs = append(cs, container.Summary{ImageID: "sha256:many", Names: []string{fmt.Sprintf("/s-%d", i)},
			Labels: map[string]string{LabelMachine: "m", LabelService: "s"}})
	}
	got := imageUsage(imgs, cs, "m").Images[0]
	if len(got.Tags) != MaxImageNames || len(got.Users) != MaxImageUsers || got.InUse != MaxImageUsers+10 {
		t.Fatalf("tags %d users %d in use %d, want %d, %d, %d", len(got.Tags), len(got.Users), got.InUse,
			MaxImageNames, MaxImageUsers, MaxImageUsers+10)
	}
	if d := describeUsers(got); !strings.Contains(d, "service s (container s-0,") || !strings.HasSuffix(d, fmt.Sprintf("%d more uncloud containers", MaxImageUsers+10-4)) {
		t.Fatalf("describeUsers = %q", d)
	}
	// An empty machine ID never makes a container uncloud's.
	if got := imageUsage(imgs, cs, "").Images[0]; got.InUse != 0 || got.Others != len(cs) {
		t.Fatalf("with no machine ID: in use %d others %d", got.InUse, got.Others)
	}
}

func TestPruneCandidates(t *testing.T) {
	imgs := []Image{
		{ID: "dangling"},
		{ID: "digest-only", Digests: []string{"x@sha256:1"}},
		{ID: "tagged", Tags: []string{"app:1"}},
		{ID: "used-dangling", InUse: 1},
		{ID: "used-by-other", Tags: []string{"db:1"}, Others: 1},
		{ID: "used-tagged", Tags: []string{"web:1"}, InUse: 2},
	}
	ids := func(is []Image) string {
		var out []string
		for _, i := range is {
			out = append(out, i.ID)
		}
		return strings.Join(out, ",")
	}
	for _, tt := range []struct {
		all  bool
		keep []string
		want string
	}{
		{false, nil, "dangling,digest-only"},
		{true, nil, "dangling,digest-only,tagged"},
		// Services pinned by registry digest and by image ID keep theirs.
		{false, []string{"x@sha256:1"}, "dangling"},
		{true, []string{"tagged", "reg:5000/other@sha256:9"}, "dangling,digest-only"},
	} {
		if got := ids(pruneCandidates(imgs, tt.all, tt.keep)); got != tt.want {
			t.Errorf("pruneCandidates(all=%v, keep=%v) = %s, want %s", tt.all, tt.keep, got, tt.want)
		}
	}
}

func TestCheckImageRef(t *testing.T) {
	for _, tt := range []struct {
		ref string
		ok  bool
	}{
		{"web:1", true},
		{"sha256:0123456789ab", true},
		{"registry.example:5000/team/web@sha256:" + strings.Repeat("a", 64), true},
		{"", false},
		{"web 1", false},
		{strings.Repeat("a", maxImageRef+1), false},
	} {
		if err := checkImageRef(tt.ref); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrBadSpec)) {
			t.Errorf("checkImageRef(%.20q) = %v, want ok=%v", tt.ref, err, tt.ok)
		}
	}
}

// TestDockerImageRemoveAndPrune: against the host's Docker, an image an
// uncloud container uses (even a stopped one) is listed with it, refused
// by rm unless forced, and never a prune candidate; an unused tagged image
// is one only with --all. The prune itself runs as a dry run here (a real
// one would take the host's other unused images); e2e prunes for real.
func TestDockerImageRemoveAndPrune(t *testing.T) {
	c := needDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const machineID = "m-imagels-test"
	rt := &Runtime{docker: c, cfg: Config{MachineName: "m-imagels", MachineID: machineID}}
	stamp := time.Now().UnixNano()
	used, unused := fmt.Sprintf("uncloud-test/imagels-used:%d", stamp), fmt.Sprintf("uncloud-test/imagels-unused:%d", stamp)
	for tag, content := range map[string]string{used: "used " + used, unused: "unused " + unused} {
		if err := testimage.Import(ctx, c, oneFileImage(t, content), tag); err != nil {
			t.Fatal(err)
		}
	}
	usedID, _ := rt.ImageID(ctx, used)
	unusedID, _ := rt.ImageID(ctx, unused)
	ctr, err := c.ContainerCreate(ctx, &container.Config{Image: used, Cmd: []string{"/content"},
		Labels: map[string]string{LabelMachine: machineID, LabelService: "websvc"}}, nil, nil, nil, fmt.Sprintf("websvc-%d", stamp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bg := context.Background()
		c.ContainerRemove(bg, ctr.ID, container.RemoveOptions{Force: true})
		c.ImageRemove(bg, usedID, image.RemoveOptions{Force: true})
		c.ImageRemove(bg, unusedID, image.RemoveOptions{Force: true})
	})

	list, err := rt.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawUsed, sawUnused bool
	for _, img := range list.Images {
		switch img.ID {
		case usedID:
			sawUsed = img.InUse == 1 && len(img.Users) == 1 && img.Users[0].Service == "websvc" &&
				img.Users[0].State == "created" && len(img.Tags) == 1 && img.Tags[0] == used && img.Size > 0
		case unusedID:
			sawUnused = !img.Used()
		}
	}
	if !sawUsed || !sawUnused {
		t.Fatalf("Images: used listed right %v, unused %v: %+v", sawUsed, sawUnused, list)
	}

	_, err = rt.RemoveImage(ctx, used, RemoveImageOptions{})
	if !errors.Is(err, ErrImageInUse) || !strings.Contains(err.Error(), "service websvc") || !strings.Contains(err.Error(), "m-imagels") {
		t.Fatalf("rm of a used image: %v, want ErrImageInUse naming service websvc and the machine", err)
	}
	if _, err := rt.RemoveImage(ctx, used, RemoveImageOptions{Force: true, Check: true}); err != nil {
		t.Fatalf("forced check: %v", err)
	}
	if id, _ := rt.ImageID(ctx, used); id != usedID {
		t.Fatalf("a check removed %s", used)
	}
	if _, err := rt.RemoveImage(ctx, "uncloud-test/imagels-absent:1", RemoveImageOptions{}); !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("rm of an absent image: %v, want ErrImageNotFound", err)
	}

	for _, all := range []bool{false, true} {
		rep, err := rt.PruneImages(ctx, PruneOptions{All: all, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		has := map[string]bool{}
		for _, img := range rep.Removed {
			has[img.ID] = true
		}
		if has[usedID] || has[unusedID] != all || !rep.DryRun {
			t.Fatalf("dry-run prune (all=%v) would remove used %v, unused %v", all, has[usedID], has[unusedID])
		}
	}
	if id, _ := rt.ImageID(ctx, unused); id != unusedID {
		t.Fatal("a dry run removed an image")
	}

	rm, err := rt.RemoveImage(ctx, unused, RemoveImageOptions{})
	if err != nil || rm.ID != unusedID || len(rm.Deleted) == 0 {
		t.Fatalf("rm of an unused image: %+v, %v", rm, err)
	}
	if _, err := rt.ImageID(ctx, unused); !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("after rm: %v", err)
	}
}
