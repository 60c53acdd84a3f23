package orchestrate

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// sealRig is a rig whose machines m1..m3 have machine records with
// sealing keys; m1 (self) opens with its own.
type sealRig struct {
	*rig
	keys map[string]*ecdh.PrivateKey
}

func newSealRig(t *testing.T) *sealRig {
	t.Helper()
	keys := map[string]*ecdh.PrivateKey{}
	for _, id := range []string{"id-m1", "id-m2", "id-m3", "id-m4"} {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k
	}
	r := newRig(t, newFleet(), Config{Sealing: Sealing{MachineID: "id-m1", Key: keys["id-m1"]}})
	for _, id := range []string{"id-m1", "id-m2", "id-m3"} {
		r.addMachine(t, id, keys[id])
	}
	return &sealRig{rig: r, keys: keys}
}

func (r *rig) addMachine(t *testing.T, id string, k *ecdh.PrivateKey) {
	t.Helper()
	m := &record.Machine{ID: id, Name: strings.TrimPrefix(id, "id-"), SealKey: sealing.EncodePublic(k.PublicKey())}
	if err := r.store.Put(context.Background(), m.Key(), m); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) spec(t *testing.T, service string) (runtime.ContainerSpec, []byte) {
	t.Helper()
	svc, err := r.o.service(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	var spec runtime.ContainerSpec
	if err := json.Unmarshal(svc.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	return spec, svc.Spec
}

const (
	envValue    = "hunter2-env-value"
	secretValue = "s3cret-file-content"
)

func secretReq(content string) api.RunRequest {
	return api.RunRequest{Name: "web", Image: "nginx:1", Replicas: 2, Env: []string{"DB_PASSWORD=" + envValue, "MODE=prod"},
		Files:   []api.FileSpec{{Kind: "secret", Name: "db_password"}, {Kind: "config", Name: "app.conf", Target: "/etc/app.conf"}},
		Secrets: []api.SecretContent{{Kind: "secret", Name: "db_password", Data: []byte(content)}, {Kind: "config", Name: "app.conf", Data: []byte("port=80")}}}
}

// TestSealedSpec: values are sealed for every member, stored by name
// only, opened by each member and by no other machine; the shown spec
// has no ciphertext.
func TestSealedSpec(t *testing.T) {
	r := newSealRig(t)
	ctx := context.Background()
	if _, err := deploy(r.rig, api.DeployRequest{Services: []api.RunRequest{secretReq(secretValue)}}); err != nil {
		t.Fatal(err)
	}
	spec, raw := r.spec(t, "web")
	if bytes.Contains(raw, []byte(envValue)) || bytes.Contains(raw, []byte("prod")) {
		t.Fatalf("service record holds a plain value: %s", raw)
	}
	if len(spec.Env) > 0 || !slices.Equal(spec.EnvNames, []string{"DB_PASSWORD", "MODE"}) || len(spec.EnvSealed) == 0 {
		t.Fatalf("spec env %q names %q sealed %d bytes", spec.Env, spec.EnvNames, len(spec.EnvSealed))
	}
	for _, id := range []string{"id-m1", "id-m2", "id-m3"} {
		env, err := OpenEnv(spec, id, r.keys[id])
		if err != nil || !slices.Equal(env, []string{"DB_PASSWORD=" + envValue, "MODE=prod"}) {
			t.Errorf("%s opens %q, %v", id, env, err)
		}
	}
	if _, err := OpenEnv(spec, "id-m4", r.keys["id-m4"]); !errors.Is(err, sealing.ErrNotRecipient) {
		t.Errorf("a machine that is not a member opened the environment: %v", err)
	}
	// The blob is bound to its service.
	moved := spec
	moved.Service = "other"
	if _, err := OpenEnv(moved, "id-m2", r.keys["id-m2"]); err == nil {
		t.Error("the environment sealed for web opened as another service's")
	}
	sec, err := r.o.secret(ctx, "db_password")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sec.Data, []byte(secretValue)) {
		t.Fatal("secret record holds its content in clear")
	}
	got, h, err := sealing.Open(sec.Data, record.SecretAAD(sec.Name, sec.Version), "id-m3", r.keys["id-m3"])
	if err != nil || string(got) != secretValue {
		t.Fatalf("m3 opens the secret: %q %v", got, err)
	}
	if ids := slices.Sorted(slices.Values(h.RecipientIDs())); !slices.Equal(ids, []string{"id-m1", "id-m2", "id-m3"}) {
		t.Errorf("sealed for %v, want the three members", ids)
	}
	if _, err := r.o.secret(ctx, record.SecretName("config", "app.conf")); err != nil {
		t.Errorf("config record: %v", err)
	}
	wantFiles := []runtime.FileRef{{Kind: "secret", Name: "db_password", Version: sec.Version}}
	if len(spec.Files) != 2 || spec.Files[0] != wantFiles[0] || spec.Files[1].TargetPath() != "/etc/app.conf" {
		t.Errorf("files %+v", spec.Files)
	}
	// What inspect shows: names, no ciphertext.
	det, err := r.o.InspectService(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(det.Spec, []byte("env_sealed")) || !bytes.Contains(det.Spec, []byte("DB_PASSWORD")) {
		t.Errorf("inspect shows %s", det.Spec)
	}
}

// TestSealedDeployRolls: the same values again change nothing (the stored
// blobs are kept, so the spec bytes are equal); a rotated secret or a
// changed env value rolls the service; a new member gets new content
// re-wrapped for it without a roll.
func TestSealedDeployRolls(t *testing.T) {
	r := newSealRig(t)
	ctx := context.Background()
	d := func(req api.RunRequest) []string {
		t.Helper()
		evs, err := deploy(r.rig, api.DeployRequest{Services: []api.RunRequest{req}})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	d(secretReq(secretValue))
	v1, _ := r.o.secret(ctx, "db_password")
	if evs := d(secretReq(secretValue)); !slices.Equal(evs, []string{"plan web unchanged", "web done"}) {
		t.Errorf("the same secrets and env again: %q", evs)
	}
	evs := d(secretReq("rotated"))
	if n := countPrefix(evs, "plan web replace"); n != 2 {
		t.Errorf("a rotated secret replaces %d containers, want 2: %q", n, evs)
	}
	v2, _ := r.o.secret(ctx, "db_password")
	if v2.Version == v1.Version {
		t.Error("new content kept its version")
	}
	changed := secretReq("rotated")
	changed.Env = []string{"DB_PASSWORD=other", "MODE=prod"}
	if evs := d(changed); countPrefix(evs, "plan web replace") != 2 {
		t.Errorf("a changed env value: %q", evs)
	}
	// A dry run with new content says replace and writes nothing.
	before, _ := r.o.secret(ctx, "db_password")
	req := api.DeployRequest{DryRun: true, Services: []api.RunRequest{secretReq("dry")}}
	req.Services[0].Env = changed.Env
	evs, err := deploy(r.rig, req)
	if err != nil || countPrefix(evs, "plan web replace") != 2 {
		t.Errorf("dry run with a new secret: %v %q", err, evs)
	}
	if after, _ := r.o.secret(ctx, "db_password"); after.Version != before.Version || !bytes.Equal(after.Data, before.Data) {
		t.Error("a dry run stored the secret")
	}
	// m4 joins: the same content is re-wrapped for it, same version, no roll.
	r.addMachine(t, "id-m4", r.keys["id-m4"])
	envBefore, _ := r.spec(t, "web")
	if evs := d(changed); !slices.Equal(evs, []string{"plan web unchanged", "web done"}) {
		t.Errorf("the same deploy after a join: %q", evs)
	}
	envAfter, _ := r.spec(t, "web")
	if env, err := OpenEnv(envAfter, "id-m4", r.keys["id-m4"]); err != nil || len(env) != 2 || envAfter.EnvVersion != envBefore.EnvVersion {
		t.Errorf("after a join: the new member opens %q, %v; env version %s -> %s", env, err, envBefore.EnvVersion, envAfter.EnvVersion)
	}
	s4, _ := r.o.secret(ctx, "db_password")
	if s4.Version != before.Version {
		t.Errorf("a re-wrap changed the version %s -> %s", before.Version, s4.Version)
	}
	if got, _, err := sealing.Open(s4.Data, record.SecretAAD(s4.Name, s4.Version), "id-m4", r.keys["id-m4"]); err != nil || string(got) != "rotated" {
		t.Errorf("the new member opens %q, %v", got, err)
	}
}

func countPrefix(ss []string, p string) int {
	n := 0
	for _, s := range ss {
		if strings.HasPrefix(s, p) {
			n++
		}
	}
	return n
}

// TestFileWithoutContent: a file naming a secret nobody stored is refused
// before anything changes; one stored earlier is used at its version.
func TestFileWithoutContent(t *testing.T) {
	r := newSealRig(t)
	req := api.RunRequest{Name: "web", Image: "nginx:1", Files: []api.FileSpec{{Kind: "secret", Name: "nope"}}}
	if _, err := r.o.RunService(context.Background(), req, nil); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("run with an unknown secret: %v", err)
	}
	if r.hasService(t, "web") {
		t.Error("a service record was written")
	}
	r.run(t, api.RunRequest{Name: "a", Image: "nginx:1", Files: []api.FileSpec{{Kind: "secret", Name: "k"}},
		Secrets: []api.SecretContent{{Kind: "secret", Name: "k", Data: []byte("v")}}})
	r.run(t, api.RunRequest{Name: "b", Image: "nginx:1", Files: []api.FileSpec{{Kind: "secret", Name: "k"}}})
	a, _ := r.spec(t, "a")
	b, _ := r.spec(t, "b")
	if a.Files[0].Version == "" || a.Files[0].Version != b.Files[0].Version {
		t.Errorf("versions %q and %q", a.Files[0].Version, b.Files[0].Version)
	}
}

// TestReseal: after a join, the lowest live member re-wraps secrets and
// environments for the new set, keeping versions (nothing rolls); the
// new member opens them. After a removal, the removed machine is no
// longer a recipient of the re-wrapped blobs, which remember it.
func TestReseal(t *testing.T) {
	r := newSealRig(t)
	ctx := context.Background()
	if _, err := deploy(r.rig, api.DeployRequest{Services: []api.RunRequest{secretReq(secretValue)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := r.o.Reseal(ctx); err != nil || n != 0 {
		t.Fatalf("nothing to re-wrap: %d %v", n, err)
	}
	sec0, _ := r.o.secret(ctx, "db_password")
	spec0, _ := r.spec(t, "web")
	r.addMachine(t, "id-m4", r.keys["id-m4"])
	r.fleet.ms = append(r.fleet.ms, Machine{ID: "id-m4", Name: "m4", State: "alive", Mode: "kernel"})
	// m1 is the lowest live member that can open them: it re-wraps
	// the two secrets and the environment.
	if n, err := r.o.Reseal(ctx); err != nil || n != 3 {
		t.Fatalf("re-wrapped %d records (%v), want 3", n, err)
	}
	sec, _ := r.o.secret(ctx, "db_password")
	if sec.Version != sec0.Version {
		t.Errorf("a re-wrap changed the version")
	}
	if got, _, err := sealing.Open(sec.Data, record.SecretAAD(sec.Name, sec.Version), "id-m4", r.keys["id-m4"]); err != nil || string(got) != secretValue {
		t.Errorf("the new member opens %q, %v", got, err)
	}
	spec, _ := r.spec(t, "web")
	if env, err := OpenEnv(spec, "id-m4", r.keys["id-m4"]); err != nil || len(env) != 2 || spec.EnvVersion != spec0.EnvVersion {
		t.Errorf("the new member opens the env %q, %v", env, err)
	}
	if evs, err := deploy(r.rig, api.DeployRequest{Services: []api.RunRequest{secretReq(secretValue)}}); err != nil ||
		!slices.Equal(evs, []string{"plan web unchanged", "web done"}) {
		t.Errorf("deploy after the re-wrap: %v %q", err, evs)
	}
	// m2 is removed (its record goes): it leaves the set.
	if err := r.store.Delete(ctx, record.MachinesPrefix+"id-m2"); err != nil {
		t.Fatal(err)
	}
	if n, err := r.o.Reseal(ctx); err != nil || n != 3 {
		t.Fatalf("after a removal re-wrapped %d (%v), want 3", n, err)
	}
	sec, _ = r.o.secret(ctx, "db_password")
	if _, _, err := sealing.Open(sec.Data, record.SecretAAD(sec.Name, sec.Version), "id-m2", r.keys["id-m2"]); !errors.Is(err, sealing.ErrNotRecipient) {
		t.Errorf("the removed machine still opens the re-wrapped secret: %v", err)
	}
	if h, _ := sealing.ParseHeader(sec.Data); !slices.Contains(h.Exposed, "id-m2") {
		t.Errorf("exposure history %v forgets the removed machine", h.Exposed)
	}
}

// TestResealOnlyLowest: a machine that is not the lowest live recipient
// leaves the re-wrap to it.
func TestResealOnlyLowest(t *testing.T) {
	r := newSealRig(t)
	ctx := context.Background()
	if _, err := deploy(r.rig, api.DeployRequest{Services: []api.RunRequest{secretReq(secretValue)}}); err != nil {
		t.Fatal(err)
	}
	r.addMachine(t, "id-m4", r.keys["id-m4"])
	other := New(Config{Fleet: r.fleet, Records: r.store, Engine: r.engine, Sealing: Sealing{MachineID: "id-m2", Key: r.keys["id-m2"]}})
	if n, err := other.Reseal(ctx); err != nil || n != 0 {
		t.Errorf("m2 re-wrapped %d (%v) while m1 is live", n, err)
	}
	r.fleet.set("m1", "down")
	if n, err := other.Reseal(ctx); err != nil || n != 3 {
		t.Errorf("m2 re-wrapped %d (%v) with m1 down, want 3", n, err)
	}
}
