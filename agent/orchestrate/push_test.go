package orchestrate

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

// fakePusher stages once and says each target pulled, or fails those
// named in fail.
type fakePusher struct {
	mu     sync.Mutex
	stages int
	pulls  []string
	fail   map[string]error
	stage  error
}

func (p *fakePusher) Stage(_ context.Context, ref string) (api.ImagePullFrom, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stages++
	return api.ImagePullFrom{Source: "id-m1", Image: ref, Digest: "sha256:manifest"}, p.stage
}

func (p *fakePusher) PullFrom(_ context.Context, t Machine, req api.ImagePullFrom, progress func(api.ImageProgress)) error {
	p.mu.Lock()
	p.pulls = append(p.pulls, t.Name)
	err := p.fail[t.Name]
	p.mu.Unlock()
	if err != nil {
		return err
	}
	progress(api.ImageProgress{Status: "pulling", Bytes: 10})
	progress(api.ImageProgress{Status: "done", Bytes: 20, Digest: req.Digest})
	return nil
}

// TestPushRegistry: the image is staged once, only for the machines that
// lack it; a machine whose tag names another image is refused unless
// forced; a failure on one machine is that machine's; a failed staging
// fails every machine that needed it.
func TestPushRegistry(t *testing.T) {
	pusher := &fakePusher{fail: map[string]error{}}
	r := newRig(t, newFleet("m4", "m5:down"), Config{Pusher: pusher})
	push := func(req api.PushRequest) map[string]api.ImageProgress {
		t.Helper()
		got := map[string]api.ImageProgress{}
		if err := r.o.PushImage(context.Background(), req, func(p api.ImageProgress) error {
			if p.Final() {
				if _, dup := got[p.Machine]; dup {
					t.Errorf("two final lines for %s", p.Machine)
				}
				got[p.Machine] = p
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Everyone has it: nothing staged.
	got := push(api.PushRequest{Image: "app:1", Machines: []string{"m2", "m3"}})
	if got["m2"].Status != "present" || got["m3"].Status != "present" || pusher.stages != 0 {
		t.Fatalf("push to machines that have it: %+v, %d stagings", got, pusher.stages)
	}
	// m2 and m3 lack it, m4 has another image under the tag, m5 is down;
	// m3's pull fails.
	r.engine.lacks["m2"], r.engine.lacks["m3"], r.engine.differs["m4"] = true, true, true
	pusher.fail["m3"] = errors.New("image app:1 is linux/arm64, machine m3 is linux/amd64")
	got = push(api.PushRequest{Image: "app:1", Machines: []string{"m2", "m3", "m4", "m5"}})
	if p := got["m2"]; p.Status != "done" || p.Bytes != 20 || p.Digest != "sha256:manifest" || p.Image != "app:1" {
		t.Errorf("m2: %+v", p)
	}
	if p := got["m3"]; p.Status != "failed" || !strings.Contains(p.Error, "machine m3 is linux/amd64") {
		t.Errorf("m3: %+v", p)
	}
	if p := got["m4"]; p.Status != "failed" || !strings.Contains(p.Error, "--force") {
		t.Errorf("m4 (another image under the tag): %+v", p)
	}
	if p := got["m5"]; p.Status != "failed" || !strings.Contains(p.Error, "down or unreachable") {
		t.Errorf("m5: %+v", p)
	}
	if pusher.stages != 1 || len(pusher.pulls) != 2 {
		t.Errorf("%d stagings and pulls to %v; want one staging and pulls to m2 and m3", pusher.stages, pusher.pulls)
	}
	// Forced: m4 pulls too.
	got = push(api.PushRequest{Image: "app:1", Machines: []string{"m4"}, Force: true})
	if got["m4"].Status != "done" {
		t.Errorf("forced push to m4: %+v", got["m4"])
	}
	// Staging fails: every machine that needed the image says why.
	pusher.stage = errors.New("no image registry on m1")
	got = push(api.PushRequest{Image: "app:1", Machines: []string{"m2", "m3"}})
	for _, m := range []string{"m2", "m3"} {
		if p := got[m]; p.Status != "failed" || !strings.Contains(p.Error, "no image registry on m1") {
			t.Errorf("%s after a failed staging: %+v", m, p)
		}
	}
	// An unknown method is the caller's mistake.
	err := r.o.PushImage(context.Background(), api.PushRequest{Image: "app:1", Method: "rsync"}, func(api.ImageProgress) error { return nil })
	if !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("push --method rsync: %v", err)
	}
}
