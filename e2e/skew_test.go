package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// previousCommit is the previous release the current code must work
// with: the last commit landed and verified by CI before machine upgrade.
const (
	previousCommit  = "f1679bb"
	previousVersion = "prev-" + previousCommit
)

// previousBuild builds previousCommit's binary once, from git history
// (git archive into a temp dir, then go build there).
type previousBuild struct {
	once sync.Once
	bin  string
	skip string // why there is no binary: no git history here
	err  error
}

var previous previousBuild

func (p *previousBuild) get() (bin, skip string, err error) {
	p.once.Do(func() {
		root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
		if err != nil {
			p.skip = fmt.Sprintf("no git history here (%v): cannot build the previous release %s", err, previousCommit)
			return
		}
		repo := strings.TrimSpace(string(root))
		if err := exec.Command("git", "-C", repo, "cat-file", "-e", previousCommit+"^{commit}").Run(); err != nil {
			p.skip = fmt.Sprintf("commit %s is not in this clone's history (shallow?): cannot build the previous release", previousCommit)
			return
		}
		// The commit never changes, so its build is kept between runs
		// (and its source dir stays the same, which keeps Go's build
		// cache warm).
		dir := filepath.Join(os.TempDir(), "uncloud-previous-"+previousCommit)
		p.bin = filepath.Join(dir, "uncloud-"+previousCommit)
		if _, err := os.Stat(p.bin); err == nil {
			return
		}
		src := filepath.Join(dir, "src")
		if err := os.RemoveAll(src); err != nil {
			p.err = err
			return
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			p.err = err
			return
		}
		archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", repo, previousCommit, src)
		if out, err := archive.CombinedOutput(); err != nil {
			p.err = fmt.Errorf("git archive %s: %w\n%s", previousCommit, err, out)
			return
		}
		// Built under a temp name and renamed, so a killed build is not
		// taken for a finished one next time.
		tmp := p.bin + ".building"
		if p.err = buildUncloud(tmp, src, "-X main.version="+previousVersion); p.err == nil {
			p.err = os.Rename(tmp, p.bin)
		}
	})
	return p.bin, p.skip, p.err
}

// TestVersionSkew runs the previous release beside the current one: m1
// (previous) creates the network, m2 (current) joins with m1's token and
// m3 (previous) joins with m2's. Every machine lists the others alive with
// their versions; a service deployed from a previous-release CLI on m1 is
// seen from m2, and one deployed from m2 is seen by m3's previous-release
// CLI; the resolver of each version answers for containers on both; the
// ingress of each version serves a service whose containers run on both.
func TestVersionSkew(t *testing.T) {
	old, skip, err := previous.get()
	if skip != "" {
		t.Skip(skip)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	shape := labShape{
		binary: func(i int, h *lab.Host) (string, error) {
			if i == 1 {
				return lab.UncloudBinary()
			}
			return old, nil
		},
		tokenFrom: func(i int) int { return i - 1 },
	}
	c := newContainerLabWith(ctx, t, shape, withDocker, withDocker, withDocker)
	version := map[string]string{"m1": previousVersion, "m2": "dev", "m3": previousVersion}
	// oldCLI runs the previous release's CLI on host i.
	oldCLI := func(i int, args ...string) (string, error) { return c.hosts[i].Run(ctx, old, args...) }

	t.Run("formation: every machine sees the others alive, with their versions", func(t *testing.T) {
		for i := range c.hosts {
			for _, m := range c.machines(ctx, t, i) {
				if m.Version != version[m.Name] {
					t.Errorf("%s lists %s on %q, want %q", c.hosts[i].Name, m.Name, m.Version, version[m.Name])
				}
			}
		}
	})

	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push from m1 (previous) to the others: %v\n%s", err, out)
	}
	dir := filepath.Join(c.hosts[0].Dir, "skew")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	compose := func(name, host string, replicas int) string {
		path := filepath.Join(dir, name+".yaml")
		body := fmt.Sprintf("services:\n  %s:\n    image: %s\n    ports: [\"%s:8080/http\"]\n    deploy:\n      replicas: %d\n",
			name, testimage.Tag, host, replicas)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	if !t.Run("state: a service deployed on either version is seen on the other", func(t *testing.T) {
		if out, err := oldCLI(0, "deploy", "-p", "default", "-f", compose("web", "web.test", 3)); err != nil {
			t.Fatalf("deploy from m1's previous-release CLI: %v\n%s", err, out)
		}
		web := c.running(ctx, t, 1, "web", 3)
		machines := map[string]bool{}
		for _, ci := range web {
			machines[ci.Machine] = true
		}
		if len(machines) != 3 {
			t.Errorf("web's 3 containers run on %v, want one on each machine", machines)
		}
		if out, err := c.uncloud(ctx, t, 1, "deploy", "-p", "default", "-f", compose("api", "api.test", 2)); err != nil {
			t.Fatalf("deploy from m2 (current): %v\n%s", err, out)
		}
		eventuallyE2E(t, "m3's previous-release CLI listing api's 2 running containers", 60*time.Second, func() error {
			out, err := oldCLI(2, "ps", "-o", "json")
			if err != nil {
				return err
			}
			var cs []api.ContainerInfo
			if err := json.Unmarshal([]byte(out), &cs); err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			n := 0
			for _, ci := range cs {
				if ci.Service == "api" && ci.State == "running" {
					n++
				}
			}
			if n != 2 {
				return fmt.Errorf("%d running api containers", n)
			}
			return nil
		})
	}) {
		return
	}

	t.Run("DNS: each version's resolver answers for containers on both", func(t *testing.T) {
		for i := range c.hosts {
			eventuallyE2E(t, fmt.Sprintf("%s (%s) answering web.internal with 3 addresses", c.hosts[i].Name, version[c.hosts[i].Name]),
				30*time.Second, func() error {
					out, err := c.uncloud(ctx, t, i, "dns", "query", "web.internal", "-o", "json")
					if err != nil {
						return err
					}
					var a api.DNSAnswer
					if err := json.Unmarshal([]byte(out), &a); err != nil {
						return fmt.Errorf("%w: %s", err, out)
					}
					if len(a.Answer) != 3 {
						return fmt.Errorf("answers %s", out)
					}
					return nil
				})
		}
	})

	t.Run("ingress: each version's ingress serves containers on both", func(t *testing.T) {
		for _, m := range []string{"m1", "m2"} {
			if out, err := c.uncloud(ctx, t, 1, "machine", "role", "add", m, "ingress"); err != nil {
				t.Fatalf("role add %s ingress: %v\n%s", m, err, out)
			}
		}
		for i := range 2 {
			url := "http://" + c.hosts[i].Addr.String() + "/"
			eventuallyE2E(t, fmt.Sprintf("the ingress on %s (%s) answering from web's 3 containers", c.hosts[i].Name,
				version[c.hosts[i].Name]), 60*time.Second, func() error {
				seen := map[string]bool{}
				for range 12 {
					out, err := c.hosts[2].Run(ctx, "curl", "-sf", "--max-time", "5", "-H", "Host: web.test", url)
					if err != nil {
						return fmt.Errorf("curl %s: %v %s", url, err, out)
					}
					if f := strings.Fields(out); len(f) > 0 {
						seen[f[0]] = true // host=<container>
					}
				}
				if len(seen) < 3 {
					return fmt.Errorf("answers from %d containers: %v", len(seen), seen)
				}
				return nil
			})
		}
	})
}
