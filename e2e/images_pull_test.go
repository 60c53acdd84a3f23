package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
)

// TestImagePull: three machines, each with its own Docker Engine, run a
// private image from a registry with TLS and a password (Debian's
// docker-registry in a lab host of its own). The CLI takes the password
// from a Docker config file, as `docker login` leaves it. A wrong
// password is refused with the registry's words and starts nothing; the
// right one pulls on every machine that runs a replica; a tag moved
// between two replicas still gives both the same digest; the password is
// nowhere afterwards: not in the agents' logs, their data directories,
// the replicated state, container labels, or --output json.
func TestImagePull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := newContainerLab(ctx, t, withDocker, withDocker, withDocker)

	reg := c.startRegistry(ctx, t)
	password := reg.password
	ref := reg.Addr + "/team/echo:1"

	// Version 1 under the tag; the developer's machine is the registry host.
	v1, err := echoImageTar(c.echoBin, "1")
	if err != nil {
		t.Fatal(err)
	}
	d1 := reg.push(ctx, t, v1, ref)

	good := reg.config
	bad := dockerConfigDir(t, reg.Addr, reg.user, password+"-wrong")
	uc := func(cfg string, i int, args ...string) (string, error) {
		return c.hosts[i].Run(ctx, "env", append([]string{"DOCKER_CONFIG=" + cfg, c.lab.Uncloud}, args...)...)
	}

	// A wrong password: a clear error with the registry's words, nothing started.
	out, err := uc(bad, 0, "run", "--name", "echo", "--replicas", "3", ref)
	if err == nil {
		t.Fatalf("run with a wrong password worked:\n%s", out)
	}
	t.Logf("wrong password: %v", err)
	if msg := err.Error(); !strings.Contains(msg, "unauthorized") && !strings.Contains(msg, "authentication required") {
		t.Errorf("wrong password: the error does not say the registry refused:\n%v", err)
	}
	if cs := c.ps(ctx, t, 0); len(cs) != 0 {
		t.Errorf("containers after a refused run: %+v", cs)
	}
	if out, err := c.uncloud(ctx, t, 0, "inspect", "echo"); err == nil {
		t.Errorf("a service record after a refused run:\n%s", out)
	}

	// The right password: one replica on m1, pinned to version 1.
	out, err = uc(good, 0, "run", "--name", "echo", "-m", "m1", ref)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	cs := c.running(ctx, t, 0, "echo", 1)
	if cs[0].ImageDigest != d1 {
		t.Fatalf("m1 runs digest %q, want %s", cs[0].ImageDigest, d1)
	}

	// The tag moves to version 2; a scale-up on m2 and m3 pulls version 1.
	v2, err := echoImageTar(c.echoBin, "2")
	if err != nil {
		t.Fatal(err)
	}
	d2 := reg.push(ctx, t, v2, ref)
	if d2 == d1 {
		t.Fatal("version 2 has version 1's digest: the test image did not change")
	}
	out, err = uc(good, 1, "scale", "echo", "3")
	if err != nil {
		t.Fatalf("scale: %v\n%s", err, out)
	}
	t.Logf("scale after the tag moved:\n%s", out)
	cs = c.running(ctx, t, 0, "echo", 3)
	machines := map[string]bool{}
	for _, ci := range cs {
		machines[ci.Machine] = true
		if ci.ImageDigest != d1 {
			t.Errorf("%s on %s runs %q, want the pinned %s (the tag now names %s)", ci.Name, ci.Machine, ci.ImageDigest, d1, d2)
		}
	}
	if len(machines) != 3 {
		t.Errorf("replicas on %v, want all three machines", machines)
		// What m2 (which placed them) saw of the third, and why it left it out.
		ls, _ := c.uncloud(ctx, t, 1, "machine", "ls")
		t.Logf("machine ls on m2 now:\n%s", ls)
		for _, l := range strings.Split(c.procs[1].Log(), "\n") {
			if strings.Contains(l, "left out of placement") || strings.Contains(l, "suspect") || strings.Contains(l, "level=WARN") {
				t.Logf("m2: %s", l)
			}
		}
	}
	// Each engine really has version 1's bytes, pulled from the registry.
	for i, e := range c.engines {
		img, err := e.Client.ImageInspect(ctx, reg.Addr+"/team/echo@"+d1)
		if err != nil {
			t.Errorf("%s's Docker has no %s: %v", c.hosts[i].Name, d1, err)
			continue
		}
		if len(img.RepoDigests) == 0 {
			t.Errorf("%s's image has no registry digest: not pulled", c.hosts[i].Name)
		}
	}
	// --pull always re-resolves the tag: a new service gets version 2.
	out, err = uc(good, 2, "run", "--name", "echo2", "--pull", "always", "-m", "m3", ref)
	if err != nil {
		t.Fatalf("run --pull always: %v\n%s", err, out)
	}
	if cs := c.running(ctx, t, 0, "echo2", 1); cs[0].ImageDigest != d2 {
		t.Errorf("--pull always runs %q, want the tag's new digest %s", cs[0].ImageDigest, d2)
	}

	// deploy re-resolves too: the moved tag rolls echo to version 2 on
	// all three machines, pulled where missing; a second deploy changes
	// nothing.
	compose := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(compose, []byte("services:\n  echo:\n    image: "+ref+"\n    deploy:\n      replicas: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = uc(good, 0, "deploy", "-p", "default", "-f", compose)
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	for _, ci := range c.running(ctx, t, 0, "echo", 3) {
		if ci.ImageDigest != d2 {
			t.Errorf("after deploy %s on %s runs %q, want %s", ci.Name, ci.Machine, ci.ImageDigest, d2)
		}
	}
	if out, err = uc(good, 0, "deploy", "-p", "default", "-f", compose); err != nil || !strings.Contains(out, "unchanged echo") {
		t.Errorf("second deploy: %v, want unchanged\n%s", err, out)
	}

	// The password is nowhere.
	secrets := []string{password, base64.StdEncoding.EncodeToString([]byte("alice:" + password))}
	var places []string
	check := func(where, text string) {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				places = append(places, where)
			}
		}
	}
	for i := range c.hosts {
		check(c.hosts[i].Name+" agent log", c.procs[i].Log()+c.procs[i].Output())
		for _, args := range [][]string{{"ps", "-o", "json"}, {"ls", "-o", "json"}, {"inspect", "echo"}, {"state", "ls", "-o", "json"}} {
			out, err := c.uncloud(ctx, t, i, args...)
			if err != nil {
				t.Errorf("%v on %s: %v", args, c.hosts[i].Name, err)
			}
			check(fmt.Sprintf("%s: uncloud %s", c.hosts[i].Name, strings.Join(args, " ")), out)
		}
		list, err := c.engines[i].Client.ContainerList(ctx, container.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range list {
			j, err := c.engines[i].Client.ContainerInspect(ctx, ct.ID)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(j)
			check(c.hosts[i].Name+" container "+ct.ID[:12]+" (labels, config)", string(b))
		}
		// Every file the agent keeps: state, keys, trust, logs.
		for _, dir := range []string{filepath.Join(c.hosts[i].Dir, "lib"), filepath.Join(c.hosts[i].Dir, "etc"), filepath.Join(c.hosts[i].Dir, "run")} {
			filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !d.Type().IsRegular() {
					return nil
				}
				b, err := os.ReadFile(path)
				if err == nil {
					check(path, string(b))
				}
				return nil
			})
		}
	}
	if len(places) > 0 {
		t.Errorf("the registry password is in: %s", strings.Join(places, "; "))
	}
}

// echoImageTar is the echo server's root file system with /version
// holding version, so two versions differ in their one layer.
func echoImageTar(bin, version string) ([]byte, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"echoserver", 0o755, b}, {"version", 0o644, []byte(version + "\n")}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dockerConfigDir is a DOCKER_CONFIG directory as `docker login` leaves
// it for one registry.
func dockerConfigDir(t *testing.T, registryAddr, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{registryAddr: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
