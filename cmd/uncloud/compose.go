package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/uncloud-mesh/uncloud/api"
)

// What of a Compose file uncloud understands; everything else gets a
// warning naming it.
var (
	composeTopKeys     = map[string]bool{"services": true, "volumes": true, "name": true, "version": true}
	composeServiceKeys = map[string]bool{"image": true, "command": true, "environment": true, "env_file": true,
		"ports": true, "volumes": true, "deploy": true, "healthcheck": true, "restart": true, "x-machines": true, "pull_policy": true,
		"x-allow-from": true}
	composeDeployKeys = map[string]bool{"replicas": true, "mode": true, "update_config": true}
	composeHealthKeys = map[string]bool{"test": true, "disable": true, "interval": true, "timeout": true, "retries": true, "start_period": true}
)

// parseCompose reads a Compose file with the compose-spec loader
// (interpolation from env, env_file, validation) into the services to
// deploy. Ports use uncloud's syntax ([HOST[/PATH]:]PORT[/PROTO]), which
// the Compose schema does not know, so they are taken out before loading
// and checked by the agent. x-machines places a service on named machines.
func parseCompose(ctx context.Context, path string, env map[string]string) ([]api.RunRequest, []string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var dict map[string]any
	if err := yaml.Unmarshal(raw, &dict); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if dict == nil {
		return nil, nil, fmt.Errorf("%s: empty file", path)
	}
	var warnings []string
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	for _, k := range sortedKeys(dict) {
		if !composeTopKeys[k] && !strings.HasPrefix(k, "x-") {
			warn("top-level key %q is not supported and is ignored", k)
		}
	}
	services, _ := dict["services"].(map[string]any)
	if len(services) == 0 {
		return nil, nil, fmt.Errorf("%s: no services", path)
	}
	ports := map[string][]string{}
	machines := map[string][]string{}
	allowFrom := map[string][]string{}
	for _, name := range sortedKeys(services) {
		svc, ok := services[name].(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("%s: service %q is not a mapping", path, name)
		}
		for _, k := range sortedKeys(svc) {
			if !composeServiceKeys[k] {
				warn("service %s: key %q is not supported and is ignored", name, k)
				delete(svc, k)
			}
		}
		if dep, ok := svc["deploy"].(map[string]any); ok {
			for _, k := range sortedKeys(dep) {
				if !composeDeployKeys[k] {
					warn("service %s: deploy.%s is not supported and is ignored", name, k)
				}
			}
		}
		if hc, ok := svc["healthcheck"].(map[string]any); ok {
			for _, k := range sortedKeys(hc) {
				if !composeHealthKeys[k] {
					warn("service %s: healthcheck.%s is not supported (checks run every 2 s, 3 failures make a container unhealthy)", name, k)
				}
			}
		}
		if list, ok := svc["ports"].([]any); ok {
			for _, p := range list {
				switch v := p.(type) {
				case string:
					ports[name] = append(ports[name], v)
				case int:
					ports[name] = append(ports[name], fmt.Sprint(v))
				default:
					return nil, nil, fmt.Errorf("%s: service %s: port %v: use the short syntax [HOST[/PATH]:]PORT[/PROTO]", path, name, p)
				}
			}
		}
		delete(svc, "ports")
		// x-allow-from: the security group, "web, machine:m2" or a list.
		switch a := svc["x-allow-from"].(type) {
		case string:
			for _, s := range strings.Split(a, ",") {
				if s = strings.TrimSpace(s); s != "" {
					allowFrom[name] = append(allowFrom[name], s)
				}
			}
		case []any:
			for _, s := range a {
				allowFrom[name] = append(allowFrom[name], fmt.Sprint(s))
			}
		}
		switch m := svc["x-machines"].(type) {
		case string:
			for _, s := range strings.Split(m, ",") {
				if s = strings.TrimSpace(s); s != "" {
					machines[name] = append(machines[name], s)
				}
			}
		case []any:
			for _, s := range m {
				machines[name] = append(machines[name], fmt.Sprint(s))
			}
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	project, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Config: dict}},
		Environment: env,
	}, func(o *loader.Options) {
		o.SetProjectName(projectName(abs), false)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []api.RunRequest
	for _, name := range sortedKeys(project.Services) {
		s := project.Services[name]
		if s.Image == "" {
			return nil, nil, fmt.Errorf("%s: service %s has no image (uncloud does not build: build it, then 'uncloud image push')", path, name)
		}
		req := api.RunRequest{Name: name, Image: s.Image, Cmd: s.Command, Restart: s.Restart,
			Ports: ports[name], Machines: machines[name], AllowFrom: allowFrom[name], Pull: s.PullPolicy}
		for _, k := range sortedKeys(s.Environment) {
			if v := s.Environment[k]; v != nil {
				req.Env = append(req.Env, k+"="+*v)
			}
		}
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeVolume, types.VolumeTypeBind:
				spec := v.Source + ":" + v.Target
				if v.ReadOnly {
					spec += ":ro"
				}
				req.Volumes = append(req.Volumes, spec)
			default:
				warn("service %s: volume type %q (%s) is not supported and is ignored", name, v.Type, v.Target)
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
		warnings = append(warnings, composeRollout(&req, name, s)...)
		out = append(out, req)
	}
	return out, warnings, nil
}

// projectName is the Compose project name: the file's directory, as
// Compose does.
func projectName(abs string) string {
	n := strings.ToLower(filepath.Base(filepath.Dir(abs)))
	var b strings.Builder
	for _, c := range n {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "uncloud"
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
