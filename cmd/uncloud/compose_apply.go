package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
)

// applyComposeKeys maps the Compose keys with Docker's meaning that
// uncloud supports beyond what composeService maps (expose, tmpfs, the
// basic container keys, resources, placement constraints, restart
// policy) from a service as compose-go loaded it into req. It returns
// one warning per key whose meaning differs or that is dropped. Ports,
// named and bind volumes, image, command, environment, healthcheck,
// replicas and mode are composeService's. Its keys are in composeKeys.
func applyComposeKeys(s types.ServiceConfig, req *api.RunRequest) []string {
	for dep, d := range s.DependsOn {
		if req.DependsOn == nil {
			req.DependsOn = map[string]string{}
		}
		req.DependsOn[dep] = d.Condition
	}
	var warns []string
	warn := func(format string, args ...any) {
		warns = append(warns, fmt.Sprintf("service %s: ", s.Name)+fmt.Sprintf(format, args...))
	}
	for _, e := range s.Expose {
		req.Expose = append(req.Expose, e)
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeTmpfs {
			t := v.Target
			if v.Tmpfs != nil && v.Tmpfs.Size > 0 {
				t += ":size=" + strconv.FormatInt(int64(v.Tmpfs.Size), 10)
			}
			req.Tmpfs = append(req.Tmpfs, t)
		}
	}
	req.Tmpfs = append(req.Tmpfs, s.Tmpfs...)
	if len(s.Entrypoint) > 0 {
		req.Entrypoint = s.Entrypoint
	}
	req.User, req.WorkingDir = s.User, s.WorkingDir
	for _, k := range sortedKeys(s.Labels) {
		v := s.Labels[k]
		if strings.HasPrefix(strings.ToLower(k), "uncloud.") {
			warn("label %s is under uncloud.* (uncloud's own) and is ignored", k)
			continue
		}
		if req.Labels == nil {
			req.Labels = map[string]string{}
		}
		req.Labels[k] = v
	}
	if s.Init != nil {
		req.Init = *s.Init
	}
	req.CapAdd, req.CapDrop, req.StopSignal = s.CapAdd, s.CapDrop, s.StopSignal
	if s.StopGracePeriod != nil {
		req.StopGracePeriod = time.Duration(*s.StopGracePeriod).String()
	}
	for _, name := range sortedKeys(s.Ulimits) {
		u := s.Ulimits[name]
		if u == nil {
			continue
		}
		if u.Single != 0 {
			req.Ulimits = append(req.Ulimits, fmt.Sprintf("%s=%d", name, u.Single))
		} else {
			req.Ulimits = append(req.Ulimits, fmt.Sprintf("%s=%d:%d", name, u.Soft, u.Hard))
		}
	}
	req.LogDriver, req.LogOptions = s.LogDriver, s.LogOpt
	if s.Logging != nil {
		req.LogDriver = s.Logging.Driver
		if len(s.Logging.Options) > 0 {
			req.LogOptions = map[string]string(s.Logging.Options)
		}
	}
	// Resources: the service-level keys, then deploy.resources (which win,
	// as in Compose).
	req.CPUs, req.Memory, req.ReserveMemory = float64(s.CPUS), int64(s.MemLimit), int64(s.MemReservation)
	if d := s.Deploy; d != nil {
		if l := d.Resources.Limits; l != nil {
			if l.NanoCPUs > 0 {
				req.CPUs = float64(l.NanoCPUs)
			}
			if l.MemoryBytes > 0 {
				req.Memory = int64(l.MemoryBytes)
			}
			if l.Pids != 0 || len(l.Devices) > 0 || len(l.GenericResources) > 0 {
				warn("deploy.resources.limits: only cpus and memory are supported")
			}
		}
		if r := d.Resources.Reservations; r != nil {
			if r.NanoCPUs > 0 {
				req.ReserveCPUs = float64(r.NanoCPUs)
			}
			if r.MemoryBytes > 0 {
				req.ReserveMemory = int64(r.MemoryBytes)
			}
			if len(r.Devices) > 0 || len(r.GenericResources) > 0 {
				warn("deploy.resources.reservations: only cpus and memory are supported")
			}
		}
		req.Constraints = append(req.Constraints, d.Placement.Constraints...)
		if len(d.Placement.Preferences) > 0 || d.Placement.MaxReplicas > 0 {
			warn("deploy.placement: only constraints are supported (replicas spread evenly)")
		}
		if rp := d.RestartPolicy; rp != nil {
			switch rp.Condition {
			case "none":
				req.Restart = "no"
			case "on-failure":
				req.Restart = "on-failure"
				if rp.MaxAttempts != nil {
					req.Restart += ":" + strconv.FormatUint(*rp.MaxAttempts, 10)
				}
			case "any", "":
				req.Restart = "always"
			default:
				warn("deploy.restart_policy.condition %q is not none, on-failure or any", rp.Condition)
			}
			if rp.Delay != nil || rp.Window != nil {
				warn("deploy.restart_policy: delay and window are Docker's to choose")
			}
		}
	}
	return warns
}
