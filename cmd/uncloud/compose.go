package main

// The Compose loader of `uncloud deploy`: compose-go's project loader
// with Docker Compose's rules (default file names and their override
// file, several -f merged in order, .env and --env-file, interpolation,
// profiles, the project name), mapped to the requests the agent takes.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
)

// composeOptions are the deploy flags that choose and read the files.
type composeOptions struct {
	Files    []string // -f, in order; none: Compose's default names, searched up from the current directory
	Project  string   // -p; default: COMPOSE_PROJECT_NAME, the files' name:, or the project directory's name
	Profiles []string // --profile; default: COMPOSE_PROFILES
	EnvFiles []string // --env-file; default: .env in the project directory
	// Env is the environment for interpolation (deploy gives os.Environ()):
	// it wins over .env files, as in Compose.
	Env []string
}

// composeResult is what a Compose project deploys as.
type composeResult struct {
	Project  string
	Files    []string // the files read, in merge order
	Services []api.RunRequest
	Warnings []string // one per key that is not honoured; see composeKeys
	// Notices are compose-go's own warnings (a variable not set, an
	// obsolete version key): shown, but not refused by --strict.
	Notices []string
}

// loadCompose reads a Compose project as `docker compose` would and maps
// it to the services to deploy. It is all `deploy --dry-run` does before
// it asks an agent for the plan.
func loadCompose(ctx context.Context, o composeOptions) (composeResult, error) {
	var res composeResult
	notices, err := collectComposeLog(func() (err error) {
		res, err = loadComposeQuietly(ctx, o)
		return err
	})
	res.Notices = append(res.Notices, notices...)
	return res, err
}

func loadComposeQuietly(ctx context.Context, o composeOptions) (composeResult, error) {
	opts, err := projectOptions(o)
	if err != nil {
		return composeResult{}, err
	}
	files, err := readComposeFiles(opts.ConfigPaths)
	if err != nil {
		return composeResult{}, err
	}
	var notices []string
	for _, f := range files {
		if f.version {
			notices = append(notices, displayPath(f.path)+": the top-level version is obsolete and ignored (as by docker compose)")
		}
	}
	project, err := opts.LoadProject(ctx)
	if err != nil {
		return composeResult{}, explainComposeError(err, files)
	}
	model, err := loadComposeModel(ctx, opts, project.Name)
	if err != nil {
		return composeResult{}, explainComposeError(err, files)
	}
	active := map[string]bool{}
	for name := range project.Services {
		active[name] = true
	}
	// Compose allows '_' in project names; uncloud's become DNS labels
	// (<service>.<project>.internal), so '_' is written '-'.
	projectName := strings.ReplaceAll(project.Name, "_", "-")
	if err := record.CheckProjectName(projectName); err != nil {
		return composeResult{}, err
	}
	res := composeResult{Project: projectName, Files: project.ComposeFiles, Warnings: composeWarnings(model, active), Notices: notices}
	if len(project.Services) == 0 {
		return res, fmt.Errorf("%s: no services to deploy (profiles: %q)", strings.Join(displayPaths(res.Files), ", "), o.Profiles)
	}
	for _, name := range sortedKeys(project.Services) {
		svc := project.Services[name]
		req, warnings, err := composeService(svc)
		if err != nil {
			return res, explainComposeError(err, files)
		}
		warnings = append(warnings, applyComposeKeys(svc, &req)...)
		more, err := composeSecrets(project, svc, &req)
		if err != nil {
			return res, err
		}
		warnings = append(warnings, more...)
		req.Project = projectName
		res.Services = append(res.Services, req)
		res.Warnings = append(res.Warnings, warnings...)
	}
	slices.Sort(res.Warnings)
	res.Warnings = slices.Compact(res.Warnings)
	return res, nil
}

// projectOptions are compose-go's options in the order Docker Compose
// applies them: the environment first (it always wins), then .env next
// to the current directory, COMPOSE_FILE, the default file names, .env
// of the project directory once it is known, profiles and the name.
func projectOptions(o composeOptions, extra ...composecli.ProjectOptionsFn) (*composecli.ProjectOptions, error) {
	fns := []composecli.ProjectOptionsFn{
		composecli.WithEnv(o.Env),
		composecli.WithEnvFiles(o.EnvFiles...),
		composecli.WithDotEnv,
		composecli.WithConfigFileEnv,
		composecli.WithDefaultConfigPath,
		composecli.WithEnvFiles(o.EnvFiles...),
		composecli.WithDotEnv,
		composecli.WithDefaultProfiles(o.Profiles...),
		composecli.WithName(o.Project),
		composecli.WithInterpolation(true),
		composecli.WithLoadOptions(castIngressPorts),
	}
	opts, err := composecli.NewProjectOptions(o.Files, append(fns, extra...)...)
	if err != nil {
		return nil, err
	}
	if len(opts.ConfigPaths) == 0 {
		dir, _ := opts.GetWorkingDir()
		return nil, fmt.Errorf("no Compose file in %s or its parents (looked for %s; or give -f FILE)", dir, strings.Join(composecli.DefaultFileNames, ", "))
	}
	return opts, nil
}

// loadComposeModel loads the same files as a YAML tree, for the
// warnings: before compose-go normalises it (which gives every service the
// default network, among others). ProjectOptions.LoadModel would do, but
// it interpolates without the environment and .env (compose-go v2.4.9).
func loadComposeModel(ctx context.Context, opts *composecli.ProjectOptions, name string) (map[string]any, error) {
	wd, err := opts.GetWorkingDir()
	if err != nil {
		return nil, err
	}
	details, err := opts.ReadConfigFiles(ctx, wd, opts)
	if err != nil {
		return nil, err
	}
	details.Environment = opts.Environment
	return loader.LoadModelWithContext(ctx, *details, castIngressPorts, func(o *loader.Options) {
		o.SkipNormalization = true
		o.SetProjectName(name, true)
	})
}

// composeService maps one loaded service to a request, with warnings
// for what only the values tell (most keys it leaves out are warned of
// through composeKeys).
func composeService(s types.ServiceConfig) (api.RunRequest, []string, error) {
	var warnings []string
	if s.Image == "" {
		return api.RunRequest{}, nil, fmt.Errorf("services.%s has no image (uncloud does not build: build it, then 'uncloud image push')", s.Name)
	}
	req := api.RunRequest{Name: s.Name, Image: s.Image, Cmd: s.Command, Restart: s.Restart, Pull: s.PullPolicy}
	var err error
	if req.Ports, err = servicePorts(s); err != nil {
		return req, nil, err
	}
	if req.Machines, err = extensionStrings(s.Extensions["x-machines"]); err != nil {
		return req, nil, fmt.Errorf("services.%s.x-machines: %w", s.Name, err)
	}
	if req.AllowFrom, err = extensionStrings(s.Extensions["x-allow-from"]); err != nil {
		return req, nil, fmt.Errorf("services.%s.x-allow-from: %w", s.Name, err)
	}
	for _, k := range sortedKeys(s.Environment) {
		if v := s.Environment[k]; v != nil {
			req.Env = append(req.Env, k+"="+*v)
		}
	}
	for _, v := range s.Volumes {
		switch v.Type {
		case types.VolumeTypeVolume, types.VolumeTypeBind:
			if v.Source == "" {
				warnings = append(warnings, fmt.Sprintf("services.%s.volumes[]: anonymous volume %s: not supported by uncloud, ignored (name it: NAME:%s)", s.Name, v.Target, v.Target))
				continue
			}
			spec := v.Source + ":" + v.Target
			if v.ReadOnly {
				spec += ":ro"
			}
			req.Volumes = append(req.Volumes, spec)
		default: // warned of: see composeValues
		}
	}
	if s.Deploy != nil {
		if s.Deploy.Replicas != nil {
			req.Replicas = *s.Deploy.Replicas
		}
		req.Mode = s.Deploy.Mode
	}
	if hc := s.HealthCheck; hc != nil && !hc.Disable && len(hc.Test) > 0 && hc.Test[0] != "NONE" {
		req.Health = hc.Test
	}
	composeRollout(&req, s)
	return req, warnings, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
