package orchestrate

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// Sealed values: environment values, secrets and configs.
//
// The machine that gets run or deploy seals them (package sealing) before
// anything is stored: every environment value of a service in one blob in
// its spec (EnvSealed, names in EnvNames), each secret's or config's
// content in its own record (/secrets/<name>). They are sealed for the
// network's members of now, every machine with a verified machine record:
// any member may run the service's containers, and a machine that is not
// a member, or no longer one (its record is refused once it is removed),
// is never a recipient of what is sealed from then on. The target opens
// them with its own sealing key when it creates a container
// (agent/secrets.go); over the machine API the spec travels sealed.
//
// A deploy that changes nothing keeps the stored blobs as they are, so
// the spec bytes stay equal and nothing rolls; new content is a new
// blob (and, for a secret, a new version), so the services using it roll.

// Sealing is this machine's sealing identity, to open what is sealed for
// it (to tell whether content changed); zero: every deploy seals anew.
type Sealing struct {
	MachineID string
	Key       *ecdh.PrivateKey
}

// envAAD binds a service's sealed environment to the service and version.
func envAAD(service, version string) []byte {
	return []byte("uncloud env " + service + " " + version)
}

// recipients are the network's members of now: every verified machine
// record with a usable sealing key.
func (o *Orchestrator) recipients(ctx context.Context) ([]sealing.Recipient, []string, error) {
	recs, err := o.store.List(ctx, record.MachinesPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list machines to seal for: %w", err)
	}
	var out []sealing.Recipient
	var ids []string
	for _, r := range recs {
		m, ok := r.(*record.Machine)
		if !ok || m.SealKey == "" {
			continue
		}
		k, err := sealing.ParsePublic(m.SealKey)
		if err != nil {
			o.log.Warn("machine's sealing key unusable: it cannot open sealed values", "machine", m.ID, "err", err)
			continue
		}
		out = append(out, sealing.Recipient{ID: m.ID, Key: k})
		ids = append(ids, m.ID)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("%w: no machine record with a sealing key to seal values for", api.ErrUnavailable)
	}
	slices.Sort(ids)
	return out, ids, nil
}

// open opens a blob sealed for this machine.
func (o *Orchestrator) open(blob, aad []byte) ([]byte, sealing.Header, error) {
	if o.sealing.Key == nil {
		return nil, sealing.Header{}, sealing.ErrNotRecipient
	}
	return sealing.Open(blob, aad, o.sealing.MachineID, o.sealing.Key)
}

// sealEnv moves spec.Env's values into spec.EnvSealed (names in
// EnvNames), reusing the blob of oldSpec when it holds the same values
// for the same machines.
func (o *Orchestrator) sealEnv(ctx context.Context, spec *runtime.ContainerSpec, oldSpec []byte) error {
	if len(spec.Env) == 0 {
		return nil
	}
	plain, _ := json.Marshal(spec.Env)
	spec.EnvNames = nil
	for _, e := range spec.Env {
		k, _, _ := strings.Cut(e, "=")
		spec.EnvNames = append(spec.EnvNames, k)
	}
	spec.Env = nil
	recips, ids, err := o.recipients(ctx)
	if err != nil {
		return err
	}
	var old runtime.ContainerSpec
	var exposed []string
	if len(oldSpec) > 0 && json.Unmarshal(oldSpec, &old) == nil && len(old.EnvSealed) > 0 {
		got, h, err := o.open(old.EnvSealed, envAAD(spec.Service, old.EnvVersion))
		if err == nil && bytes.Equal(got, plain) {
			spec.EnvVersion = old.EnvVersion
			if slices.Equal(slices.Sorted(slices.Values(h.RecipientIDs())), ids) {
				spec.EnvSealed = old.EnvSealed
				return nil
			}
			exposed = h.Exposed // same values, other machines: re-wrap
		}
	}
	if spec.EnvVersion == "" {
		spec.EnvVersion = newVersion()
	}
	spec.EnvSealed, err = sealing.Seal(plain, envAAD(spec.Service, spec.EnvVersion), recips, exposed)
	if err != nil {
		return fmt.Errorf("seal the environment of %s: %w", spec.Service, err)
	}
	return nil
}

// OpenEnv opens a spec's sealed environment with key, as machine id.
func OpenEnv(spec runtime.ContainerSpec, id string, key *ecdh.PrivateKey) ([]string, error) {
	if len(spec.EnvSealed) == 0 {
		return spec.Env, nil
	}
	plain, _, err := sealing.Open(spec.EnvSealed, envAAD(spec.Service, spec.EnvVersion), id, key)
	if err != nil {
		return nil, err
	}
	var env []string
	if err := json.Unmarshal(plain, &env); err != nil {
		return nil, fmt.Errorf("sealed environment of %s: %w", spec.Service, err)
	}
	return env, nil
}

// checkContents refuses what cannot be stored, before anything is.
func checkContents(cs []api.SecretContent) (map[string]api.SecretContent, error) {
	out := map[string]api.SecretContent{}
	for _, c := range cs {
		if c.Kind != "secret" && c.Kind != "config" {
			return nil, fmt.Errorf("%w: %s %q is not a secret or config", api.ErrBadRequest, c.Kind, c.Name)
		}
		if err := runtime.CheckSecretName(c.Name); err != nil {
			return nil, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		if len(c.Data) > api.MaxSecretBytes {
			return nil, fmt.Errorf("%w: %s %q is %d bytes, at most %d", api.ErrBadRequest, c.Kind, c.Name, len(c.Data), api.MaxSecretBytes)
		}
		key := record.SecretName(c.Kind, c.Name)
		if prev, ok := out[key]; ok && !bytes.Equal(prev.Data, c.Data) {
			return nil, fmt.Errorf("%w: %s %q is given twice with different contents", api.ErrBadRequest, c.Kind, c.Name)
		}
		out[key] = c
	}
	return out, nil
}

// storeSecrets stores the contents given (sealed for the members) and
// returns the version of each: the stored one when the content is the
// same (re-wrapped if the members changed), a new one otherwise. A dry
// run writes nothing and calls new content version "new".
func (o *Orchestrator) storeSecrets(ctx context.Context, cs []api.SecretContent, dryRun bool) (map[string]string, error) {
	byKey, err := checkContents(cs)
	if err != nil || len(byKey) == 0 {
		return nil, err
	}
	recips, ids, err := o.recipients(ctx)
	if err != nil {
		return nil, err
	}
	versions := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		c := byKey[key]
		rec := &record.Secret{Name: key, Modified: time.Now().UTC(), By: o.sealing.MachineID}
		var exposed []string
		if old, err := o.secret(ctx, key); err == nil {
			got, h, err := o.open(old.Data, record.SecretAAD(key, old.Version))
			if err == nil && bytes.Equal(got, c.Data) {
				if slices.Equal(slices.Sorted(slices.Values(h.RecipientIDs())), ids) {
					versions[key] = old.Version
					continue
				}
				rec.Version, exposed = old.Version, h.Exposed // same content, other machines: re-wrap
			}
		} else if !errors.Is(err, crdt.ErrNotFound) {
			return nil, err
		}
		if rec.Version == "" {
			rec.Version = newVersion()
			if dryRun {
				rec.Version = "new"
			}
		}
		versions[key] = rec.Version
		if dryRun {
			continue
		}
		rec.Data, err = sealing.Seal(c.Data, record.SecretAAD(key, rec.Version), recips, exposed)
		if err != nil {
			return nil, fmt.Errorf("seal %s %q: %w", c.Kind, c.Name, err)
		}
		if err := o.store.Put(ctx, rec.Key(), rec); err != nil {
			return nil, fmt.Errorf("store %s %q: %w", c.Kind, c.Name, err)
		}
		o.log.Info("stored sealed", "kind", c.Kind, "name", c.Name, "version", rec.Version, "for", ids)
	}
	return versions, nil
}

func newVersion() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (o *Orchestrator) secret(ctx context.Context, key string) (*record.Secret, error) {
	r, err := o.store.Get(ctx, record.SecretsPrefix+key)
	if err != nil {
		return nil, err
	}
	s, ok := r.(*record.Secret)
	if !ok {
		return nil, fmt.Errorf("record %s is not a secret", r.Key())
	}
	return s, nil
}

// fileRefs turns a request's files into the spec's references, at the
// versions just stored or, for names given without content, stored
// before.
func (o *Orchestrator) fileRefs(ctx context.Context, files []api.FileSpec, versions map[string]string) ([]runtime.FileRef, error) {
	var out []runtime.FileRef
	for _, f := range files {
		key := record.SecretName(f.Kind, f.Name)
		v, ok := versions[key]
		if !ok {
			s, err := o.secret(ctx, key)
			if errors.Is(err, crdt.ErrNotFound) {
				return nil, fmt.Errorf("%w: no %s %q is stored: give its content (Compose: file or environment; run: --%s %s=@FILE)",
					api.ErrNotFound, f.Kind, f.Name, f.Kind, f.Name)
			}
			if err != nil {
				return nil, err
			}
			v = s.Version
		}
		out = append(out, runtime.FileRef{Kind: f.Kind, Name: f.Name, Version: v, Target: f.Target, Mode: f.Mode, UID: f.UID, GID: f.GID})
	}
	return out, nil
}

// sealSpec stores the request's secret and config contents (sealed) and
// seals spec's environment, so that spec holds names, versions and
// ciphertext only; oldSpec is the service's stored spec, if any.
func (o *Orchestrator) sealSpec(ctx context.Context, spec *runtime.ContainerSpec, req api.RunRequest, oldSpec []byte, dryRun bool) error {
	versions, err := o.storeSecrets(ctx, req.Secrets, dryRun)
	if err != nil {
		return err
	}
	if spec.Files, err = o.fileRefs(ctx, req.Files, versions); err != nil {
		return err
	}
	if err := o.sealEnv(ctx, spec, oldSpec); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return nil
}
