package main

// Which Compose keys uncloud honours. Everything a loaded file holds is
// checked against one table; each key that is not in it is named in one
// warning, and `deploy --strict` refuses the file instead.

import (
	"fmt"
	"slices"
	"strings"
)

// composeKeys is the table of Compose keys uncloud understands, as paths
// in compose-go's canonical model: "*" stands for any name (a service, a
// volume, a variable), "[]" for the items of a list. Every key of a loaded
// file is looked up, at every depth: a mapping's keys must be listed one
// by one (or as "*"), a list of mappings through "[]"; plain values and
// lists of them need nothing below their key.
//
// The value is empty for a key that uncloud honours. A non-empty value
// marks a key that is accepted but not honoured: it is the warning, given
// once however many times the key appears, and nothing below is checked.
//
// To support a key, add it here (and map it in composeService).
var composeKeys = map[string]string{
	// Docker's meaning of the container keys: mapped in compose_apply.go.
	"services.*.expose":                               "",
	"services.*.tmpfs":                                "",
	"services.*.volumes.[].tmpfs":                     "",
	"services.*.volumes.[].tmpfs.size":                "",
	"services.*.entrypoint":                           "",
	"services.*.user":                                 "",
	"services.*.working_dir":                          "",
	"services.*.labels":                               "",
	"services.*.labels.*":                             "",
	"services.*.init":                                 "",
	"services.*.cap_add":                              "",
	"services.*.cap_drop":                             "",
	"services.*.stop_signal":                          "",
	"services.*.stop_grace_period":                    "",
	"services.*.ulimits":                              "",
	"services.*.ulimits.*":                            "",
	"services.*.ulimits.*.soft":                       "",
	"services.*.ulimits.*.hard":                       "",
	"services.*.logging":                              "",
	"services.*.logging.driver":                       "",
	"services.*.logging.options":                      "",
	"services.*.logging.options.*":                    "",
	"services.*.log_driver":                           "",
	"services.*.log_opt":                              "",
	"services.*.cpus":                                 "",
	"services.*.mem_limit":                            "",
	"services.*.mem_reservation":                      "",
	"services.*.deploy.resources":                     "",
	"services.*.deploy.resources.limits":              "",
	"services.*.deploy.resources.limits.cpus":         "",
	"services.*.deploy.resources.limits.memory":       "",
	"services.*.deploy.resources.reservations":        "",
	"services.*.deploy.resources.reservations.cpus":   "",
	"services.*.deploy.resources.reservations.memory": "",
	"services.*.deploy.placement":                     "",
	"services.*.deploy.placement.constraints":         "",
	"services.*.deploy.restart_policy":                "",
	"services.*.deploy.restart_policy.condition":      "",
	"services.*.deploy.restart_policy.max_attempts":   "",
	// depends_on orders a deploy and waits for its conditions (compose_apply.go).
	"services.*.depends_on":             "",
	"services.*.depends_on.[]":          "",
	"services.*.depends_on.*":           "",
	"services.*.depends_on.*.condition": "",
	"services.*.depends_on.*.required":  "",
	"services.*.depends_on.*.restart":   "",
	// Secrets and configs, sealed and mounted as files: compose_secrets.go.
	"secrets":                      "",
	"secrets.*":                    "",
	"secrets.*.file":               "",
	"secrets.*.environment":        "",
	"secrets.*.name":               "",
	"secrets.*.external":           "",
	"services.*.secrets":           "",
	"services.*.secrets.[]":        "",
	"services.*.secrets.[].source": "",
	"services.*.secrets.[].target": "",
	"services.*.secrets.[].uid":    "",
	"services.*.secrets.[].gid":    "",
	"services.*.secrets.[].mode":   "",
	"configs":                      "",
	"configs.*":                    "",
	"configs.*.file":               "",
	"configs.*.environment":        "",
	"configs.*.name":               "",
	"configs.*.external":           "",
	"configs.*.content":            "",
	"services.*.configs":           "",
	"services.*.configs.[]":        "",
	"services.*.configs.[].source": "",
	"services.*.configs.[].target": "",
	"services.*.configs.[].uid":    "",
	"services.*.configs.[].gid":    "",
	"services.*.configs.[].mode":   "",
	"name":                         "",
	"version":                      "", // obsolete in Compose; compose-go drops it
	"services":                     "",
	"volumes":                      "",
	"volumes.*":                    "", // a named volume; its driver, labels, … are not honoured
	"networks":                     flatNetwork,

	"services.*":                      "",
	"services.*.image":                "",
	"services.*.command":              "",
	"services.*.environment":          "",
	"services.*.environment.*":        "",
	"services.*.env_file":             "", // compose-go reads the files into environment
	"services.*.env_file.[]":          "",
	"services.*.env_file.[].path":     "",
	"services.*.env_file.[].required": "",
	"services.*.env_file.[].format":   "",
	"services.*.profiles":             "", // compose-go applies --profile
	"services.*.restart":              "",
	"services.*.pull_policy":          "",
	"services.*.deploy":               "",
	"services.*.deploy.replicas":      "",
	"services.*.deploy.mode":          "",
	"services.*.healthcheck":          "",
	"services.*.healthcheck.test":     "",
	"services.*.healthcheck.disable":  "",
	// How rollouts go: mapped in compose_rollout.go.
	"services.*.healthcheck.interval":                "",
	"services.*.healthcheck.timeout":                 "",
	"services.*.healthcheck.retries":                 "",
	"services.*.healthcheck.start_period":            "",
	"services.*.deploy.update_config":                "",
	"services.*.deploy.update_config.parallelism":    "",
	"services.*.deploy.update_config.delay":          "",
	"services.*.deploy.update_config.order":          "",
	"services.*.deploy.update_config.monitor":        "",
	"services.*.deploy.update_config.failure_action": "",
	"services.*.networks":                            flatNetwork,
	"services.*.x-machines":                          "", // placement on named machines
	"services.*.x-allow-from":                        "", // the security group

	// Ports in canonical (long) form; see compose_ports.go.
	"services.*.ports":                      "",
	"services.*.ports.[]":                   "",
	"services.*.ports.[].target":            "",
	"services.*.ports.[].published":         "",
	"services.*.ports.[].host_ip":           "",
	"services.*.ports.[].protocol":          "",
	"services.*.ports.[].mode":              "", // swarm's ingress|host; compose-go always sets it
	"services.*.ports.[]." + ingressPortExt: "",
	"services.*." + composeIngressKey:       "",

	// Volumes in canonical (long) form.
	"services.*.volumes":                          "",
	"services.*.volumes.[]":                       "",
	"services.*.volumes.[].type":                  "", // only some values: see composeValues
	"services.*.volumes.[].source":                "",
	"services.*.volumes.[].target":                "",
	"services.*.volumes.[].read_only":             "",
	"services.*.volumes.[].bind":                  "",
	"services.*.volumes.[].bind.create_host_path": "", // Docker's default for the short syntax
	"services.*.volumes.[].volume":                "", // compose-go's (empty) options of a named volume
}

// composeValues restricts keys of composeKeys to some of their values. A
// mapping that holds another value is named in one warning and the rest
// of it is not looked at: it is ignored as a whole (composeService skips
// it too).
var composeValues = map[string][]string{
	"services.*.volumes.[].type": {"volume", "bind", "tmpfs"},
	// Swarm's failure_action continue has no uncloud meaning: such an
	// update_config is ignored as a whole (see composeRollout).
	"services.*.deploy.update_config.failure_action": {"rollback", "pause"},
	"services.*.deploy.update_config.order":          {"start-first", "stop-first"},
}

const flatNetwork = "networks: ignored, uncloud has one flat network (every container reaches every other)"

// composeWarnings walks a loaded model (compose-go's canonical form,
// before normalisation) and returns one warning per key that composeKeys
// does not hold, sorted and without repeats. Only the services in active
// are looked at: those a profile leaves out are not deployed.
// Extensions (x-…) that uncloud does not know are Compose's way to carry
// data for other tools, and are passed over in silence.
func composeWarnings(model map[string]any, active map[string]bool) []string {
	var w []string
	walkComposeKeys(model, "", "", active, &w)
	slices.Sort(w)
	return slices.Compact(w)
}

func walkComposeKeys(v any, pattern, path string, active map[string]bool, w *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(v) {
			p, _ := childPattern(pattern, k)
			if allowed, ok := composeValues[p]; ok && !slices.Contains(allowed, fmt.Sprint(v[k])) {
				*w = append(*w, fmt.Sprintf("%s: %v: not supported by uncloud, ignored", join(path, k), v[k]))
				return
			}
		}
		for _, k := range sortedKeys(v) {
			if pattern == "services" && !active[k] {
				continue
			}
			p, ok := childPattern(pattern, k)
			switch {
			case !ok && strings.HasPrefix(k, "x-"):
			case !ok:
				*w = append(*w, join(path, k)+": not supported by uncloud, ignored")
			case composeKeys[p] != "":
				*w = append(*w, composeKeys[p])
			default:
				walkComposeKeys(v[k], p, join(path, k), active, w)
			}
		}
	case []any:
		for _, item := range v {
			walkComposeKeys(item, pattern+".[]", path+"[]", active, w)
		}
	}
}

// childPattern finds the table entry for key k under pattern: the key
// itself, or "*" when the level holds names.
func childPattern(pattern, k string) (string, bool) {
	for _, p := range []string{join(pattern, k), join(pattern, "*")} {
		if _, ok := composeKeys[p]; ok {
			return p, true
		}
	}
	return "", false
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// strictError turns warnings into the error of `deploy --strict`.
func strictError(warnings []string) error {
	if len(warnings) == 0 {
		return nil
	}
	return fmt.Errorf("--strict: %d unsupported Compose key(s):\n  %s", len(warnings), strings.Join(warnings, "\n  "))
}
