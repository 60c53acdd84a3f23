package runtime

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/api/types/mount"
)

// Sealed values in a container spec. The runtime never seals or opens
// anything: the agent opens EnvSealed and each file's content with this
// machine's sealing key and hands the runtime the plain values (Opened),
// which go to Docker only. What the runtime keeps of its own (the
// uncloud.spec label) carries names, versions and ciphertext, never a
// value.

// FileRef is a secret or config mounted in the container as a file.
type FileRef struct {
	// Kind is "secret" or "config".
	Kind string `json:"kind"`
	// Name is the secret's or config's name (record.Secret).
	Name string `json:"name"`
	// Version is the content version the spec was made with: a new
	// content gets a new version, so the spec changes and the service
	// rolls; a re-wrap for other machines keeps it.
	Version string `json:"version"`
	// Target is the path in the container; default /run/secrets/<name>
	// for secrets, /<name> for configs.
	Target string `json:"target,omitempty"`
	// Mode is the file's permission bits; default 0444 (as Compose).
	Mode uint32 `json:"mode,omitempty"`
	UID  int    `json:"uid,omitempty"`
	GID  int    `json:"gid,omitempty"`
}

// TargetPath is where the file appears in the container.
func (f FileRef) TargetPath() string {
	switch {
	case strings.HasPrefix(f.Target, "/"):
		return path.Clean(f.Target)
	case f.Kind == "secret":
		return "/run/secrets/" + cmp.Or(f.Target, f.Name)
	default:
		return "/" + cmp.Or(f.Target, f.Name)
	}
}

// FileMode is the file's permission bits.
func (f FileRef) FileMode() os.FileMode {
	if f.Mode == 0 {
		return 0o444
	}
	return os.FileMode(f.Mode & 0o777)
}

// SecretName is what a secret or config may be called: it becomes a file
// name and a record key.
var secretName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// CheckSecretName accepts a secret or config name.
func CheckSecretName(name string) error {
	if !secretName.MatchString(name) {
		return fmt.Errorf("%w: secret/config name %q: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrBadSpec, name)
	}
	return nil
}

// validateSealed checks the sealed part of a spec: plain values and
// sealed ones are never mixed, file refs are complete.
func (s ContainerSpec) validateSealed() error {
	if len(s.EnvSealed) > 0 && len(s.Env) > 0 {
		return fmt.Errorf("%w: a spec has either plain environment values or sealed ones", ErrBadSpec)
	}
	for _, n := range s.EnvNames {
		if n == "" || strings.ContainsAny(n, "= \t\n") {
			return fmt.Errorf("%w: environment name %q", ErrBadSpec, n)
		}
	}
	targets := map[string]bool{}
	for _, f := range s.Files {
		if f.Kind != "secret" && f.Kind != "config" {
			return fmt.Errorf("%w: file %q is a %q, not a secret or config", ErrBadSpec, f.Name, f.Kind)
		}
		if err := CheckSecretName(f.Name); err != nil {
			return err
		}
		if f.Version == "" {
			return fmt.Errorf("%w: %s %q has no content version", ErrBadSpec, f.Kind, f.Name)
		}
		if f.Target != "" && (strings.ContainsAny(f.Target, ":\x00") || strings.Contains(f.Target, "..")) {
			return fmt.Errorf("%w: %s %q: target %q", ErrBadSpec, f.Kind, f.Name, f.Target)
		}
		t := f.TargetPath()
		if t == "/" || targets[t] {
			return fmt.Errorf("%w: %s %q: target %q is used twice or is /", ErrBadSpec, f.Kind, f.Name, t)
		}
		targets[t] = true
		if f.Mode > 0o777 || f.UID < 0 || f.GID < 0 {
			return fmt.Errorf("%w: %s %q: mode %o, uid %d, gid %d", ErrBadSpec, f.Kind, f.Name, f.Mode, f.UID, f.GID)
		}
	}
	return nil
}

// Public is the spec as uncloud shows and labels it: names only, no
// ciphertext (it is useless to a reader, and a label is no place for it).
func (s ContainerSpec) Public() ContainerSpec {
	s.EnvSealed = nil
	if len(s.Env) > 0 { // a spec never sealed: keep the names only
		for _, e := range s.Env {
			k, _, _ := strings.Cut(e, "=")
			s.EnvNames = append(s.EnvNames, k)
		}
		s.Env = nil
	}
	return s
}

// PublicJSON is Public as JSON, for views of a stored spec; input that
// is not a spec comes back as null.
func PublicJSON(specJSON []byte) json.RawMessage {
	var s ContainerSpec
	if len(specJSON) == 0 || json.Unmarshal(specJSON, &s) != nil {
		return nil
	}
	b, _ := json.Marshal(s.Public())
	return b
}

// Opened is what the agent opened of a spec's sealed values.
type Opened struct {
	// Env is K=V for every name in EnvNames.
	Env []string
	// Files are the contents of the spec's Files, by Kind+"/"+Name.
	Files map[string][]byte
}

// FileKey is the key of a FileRef in Opened.Files.
func FileKey(f FileRef) string { return f.Kind + "/" + f.Name }

// writeFiles puts a container's secrets and configs under SecretsDir in
// a directory of the container's own (0700, root's), and returns the
// read-only bind mounts for them. The directory goes with the container
// (removeFiles).
func (r *Runtime) writeFiles(name string, files []FileRef, opened Opened) ([]mount.Mount, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if r.cfg.SecretsDir == "" {
		return nil, fmt.Errorf("%w: this machine has no directory for secrets and configs", ErrBadSpec)
	}
	if err := os.MkdirAll(r.cfg.SecretsDir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets directory %s: %w", r.cfg.SecretsDir, err)
	}
	dir := filepath.Join(r.cfg.SecretsDir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if os.IsExist(err) { // another container of that name has its files there
			return nil, fmt.Errorf("%w: container name %q is already used on %s", ErrNameTaken, name, r.cfg.MachineName)
		}
		return nil, fmt.Errorf("secrets directory of %s: %w", name, err)
	}
	var out []mount.Mount
	for _, f := range files {
		data, ok := opened.Files[FileKey(f)]
		if !ok {
			return nil, fmt.Errorf("%w: %s %q was not opened", ErrBadSpec, f.Kind, f.Name)
		}
		p := filepath.Join(dir, f.Kind+"-"+f.Name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s %q: %w", f.Kind, f.Name, err)
		}
		// Owner and mode as asked, for a container user that is not root.
		if err := os.Chown(p, f.UID, f.GID); err != nil {
			return nil, fmt.Errorf("chown %s %q: %w", f.Kind, f.Name, err)
		}
		if err := os.Chmod(p, f.FileMode()); err != nil {
			return nil, fmt.Errorf("chmod %s %q: %w", f.Kind, f.Name, err)
		}
		out = append(out, mount.Mount{Type: mount.TypeBind, Source: p, Target: f.TargetPath(), ReadOnly: true})
	}
	return out, nil
}

// removeFiles deletes a container's secrets and configs.
func (r *Runtime) removeFiles(name string) {
	if r.cfg.SecretsDir == "" || name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return
	}
	_ = os.RemoveAll(filepath.Join(r.cfg.SecretsDir, name))
}

// pruneAfter is how old a container's files directory must be before a
// full pass may remove it for want of its container: one being created
// has its files before Docker knows it.
const pruneAfter = 5 * time.Minute

// pruneFiles removes the files of containers that are gone without
// uncloud removing them (docker rm, a failed start after a crash).
func (r *Runtime) pruneFiles(live []*Container) {
	if r.cfg.SecretsDir == "" {
		return
	}
	ents, err := os.ReadDir(r.cfg.SecretsDir)
	if err != nil {
		return
	}
	names := map[string]bool{}
	for _, c := range live {
		names[c.Name] = true
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !e.IsDir() || names[e.Name()] || time.Since(info.ModTime()) < pruneAfter {
			continue
		}
		r.log.Info("removing the secrets and configs of a container that is gone", "container", e.Name())
		r.removeFiles(e.Name())
	}
}

// MissingFiles lists this machine's containers whose spec mounts secrets
// or configs that are not on disk (the tmpfs was emptied by a reboot), with
// their specs: the agent opens the values again and calls RestoreFiles.
func (r *Runtime) MissingFiles(ctx context.Context) (map[string]ContainerSpec, error) {
	if r.cfg.SecretsDir == "" {
		return nil, nil
	}
	live, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]ContainerSpec{}
	for _, c := range live {
		spec, err := r.Spec(ctx, c.ID)
		if err != nil || len(spec.Files) == 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(r.cfg.SecretsDir, c.Name)); os.IsNotExist(err) {
			out[c.ID] = spec
		}
	}
	return out, nil
}

// RestoreFiles writes a container's secrets and configs again where its
// mounts expect them, and starts it if it is not running (Docker could not
// start it without them).
func (r *Runtime) RestoreFiles(ctx context.Context, id string, spec ContainerSpec, opened Opened) error {
	c, err := r.inspect(ctx, id)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(c.Name, "/")
	if _, err := r.writeFiles(name, spec.Files, opened); err != nil {
		return err
	}
	if c.State != nil && !c.State.Running {
		return r.Start(ctx, id)
	}
	return nil
}
