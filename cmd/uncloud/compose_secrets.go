package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
)

// Compose `secrets:` and `configs:`, mapped onto a service's RunRequest:
// each one the service names becomes a file in its containers (FileSpec)
// and, unless it is external, its content goes along (SecretContent) for
// the agent to store sealed. The loader calls composeSecrets for every
// service; it returns the warnings to show.
//
// Content comes from the top-level definition: `file:` (read here,
// relative to the project directory), `environment:` (the variable's
// value as the project sees it) or `content:` (configs). `external: true`
// means a secret stored before (by an earlier deploy or `uncloud run
// --secret`), used as is. Docker's defaults: secrets at
// /run/secrets/<name>, configs at /<name>, mode 0444.

// composeSecrets adds svc's secrets and configs to req.
func composeSecrets(project *types.Project, svc types.ServiceConfig, req *api.RunRequest) ([]string, error) {
	var warnings []string // none yet; the loader's signature keeps room for them
	add := func(kind, source, target, uid, gid string, mode *types.FileMode, def *types.FileObjectConfig) error {
		if def == nil {
			return fmt.Errorf("service %s: %s %q is not defined in the top-level %ss", svc.Name, kind, source, kind)
		}
		// Stored under the name Compose gives it (<project>_<name> unless
		// `name:` says otherwise, as Docker does), so two projects' "db"
		// secrets do not collide; mounted under the service's name for it.
		f := api.FileSpec{Kind: kind, Name: cmp.Or(def.Name, source), Target: cmp.Or(target, source)}
		var err error
		if f.UID, err = atoiOr0(uid); err != nil {
			return fmt.Errorf("service %s: %s %s: uid %q: %w", svc.Name, kind, source, uid, err)
		}
		if f.GID, err = atoiOr0(gid); err != nil {
			return fmt.Errorf("service %s: %s %s: gid %q: %w", svc.Name, kind, source, gid, err)
		}
		if mode != nil {
			if *mode < 0 || *mode > 0o777 {
				return fmt.Errorf("service %s: %s %s: mode %o", svc.Name, kind, source, *mode)
			}
			f.Mode = uint32(*mode)
		}
		req.Files = append(req.Files, f)
		if bool(def.External) {
			return nil
		}
		data, err := fileObjectContent(project, kind, source, def)
		if err != nil {
			return fmt.Errorf("service %s: %w", svc.Name, err)
		}
		if len(data) > api.MaxSecretBytes {
			return fmt.Errorf("service %s: %s %s is %d bytes, at most %d", svc.Name, kind, source, len(data), api.MaxSecretBytes)
		}
		req.Secrets = append(req.Secrets, api.SecretContent{Kind: kind, Name: f.Name, Data: data})
		return nil
	}
	for _, s := range svc.Secrets {
		var def *types.FileObjectConfig
		if d, ok := project.Secrets[s.Source]; ok {
			fo := types.FileObjectConfig(d)
			def = &fo
		}
		if err := add("secret", s.Source, s.Target, s.UID, s.GID, s.Mode, def); err != nil {
			return warnings, err
		}
	}
	for _, c := range svc.Configs {
		var def *types.FileObjectConfig
		if d, ok := project.Configs[c.Source]; ok {
			fo := types.FileObjectConfig(d)
			def = &fo
		}
		if err := add("config", c.Source, c.Target, c.UID, c.GID, c.Mode, def); err != nil {
			return warnings, err
		}
	}
	return warnings, nil
}

// fileObjectContent reads a secret's or config's content from where its
// definition says.
func fileObjectContent(project *types.Project, kind, name string, def *types.FileObjectConfig) ([]byte, error) {
	switch {
	case def.Content != "":
		return []byte(def.Content), nil
	case def.File != "":
		p := def.File
		if !filepath.IsAbs(p) {
			p = filepath.Join(project.WorkingDir, p)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, name, err)
		}
		if st.Size() > api.MaxSecretBytes {
			return nil, fmt.Errorf("%s %s: %s is %d bytes, at most %d", kind, name, p, st.Size(), api.MaxSecretBytes)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, name, err)
		}
		return data, nil
	case def.Environment != "":
		v, ok := project.Environment[def.Environment]
		if !ok {
			return nil, fmt.Errorf("%s %s: environment variable %s is not set", kind, name, def.Environment)
		}
		return []byte(v), nil
	}
	return nil, fmt.Errorf("%s %s: needs file, environment or content (or external: true)", kind, name)
}

func atoiOr0(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err == nil && n < 0 {
		return 0, fmt.Errorf("negative")
	}
	return n, err
}
