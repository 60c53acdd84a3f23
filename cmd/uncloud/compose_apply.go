package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
)

// applyComposeKeys maps the Compose keys with Docker's meaning that
// uncloud supports (ports, expose, volumes, tmpfs, the basic container
// keys, resources, placement constraints, restart policy) from a service
// as compose-go loaded it into req. It returns one warning per key whose
// meaning differs or that is dropped; image, command, environment,
// healthcheck, replicas and mode are the loader's.
func applyComposeKeys(s types.ServiceConfig, req *api.RunRequest) []string {
	var warns []string
	warn := func(format string, args ...any) {
		warns = append(warns, fmt.Sprintf("service %s: ", s.Name)+fmt.Sprintf(format, args...))
	}
	for _, p := range s.Ports {
		spec, w := composePort(p)
		if w != "" {
			warn("%s", w)
		}
		if spec != "" {
			req.Ports = append(req.Ports, spec)
		}
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
			continue
		}
		spec, w := composeVolume(v)
		if w != "" {
			warn("%s", w)
		}
		if spec != "" {
			req.Volumes = append(req.Volumes, spec)
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

// composePort is a port as compose-go normalized it (long form, one per
// port), in uncloud's text: Docker's forms when a host port is given;
// a target alone names the port for SRV records only.
func composePort(p types.ServicePortConfig) (spec, warning string) {
	proto := strings.ToLower(p.Protocol)
	if proto == "" {
		proto = "tcp"
	}
	suffix := ""
	if proto != "tcp" {
		suffix = "/" + proto
	}
	if proto != "tcp" && proto != "udp" {
		return "", fmt.Sprintf("port %d/%s: only tcp and udp are published", p.Target, proto)
	}
	target := strconv.FormatUint(uint64(p.Target), 10)
	if p.Published == "" {
		return target + suffix, fmt.Sprintf("port %s%s has no host port: uncloud does not publish it on a random one "+
			"(it names it for SRV records, like expose); write HOST_PORT:%s to publish it", target, suffix, target)
	}
	ip := p.HostIP
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		ip = "[" + ip + "]"
	}
	if ip != "" {
		ip += ":"
	}
	// Swarm's mode: ingress (routing mesh) is not a thing here: a host
	// port is published on the machines that run a replica, as Compose
	// without Swarm does.
	return ip + p.Published + ":" + target + suffix, ""
}

// composeVolume is a volume as compose-go normalized it, in uncloud's
// -v text: VOLUME:/path[:ro] or /host:/path[:ro] (tmpfs goes to Tmpfs).
func composeVolume(v types.ServiceVolumeConfig) (spec, warning string) {
	ro := ""
	if v.ReadOnly {
		ro = ":ro"
	}
	switch v.Type {
	case types.VolumeTypeVolume:
		if v.Source == "" {
			return "", fmt.Sprintf("anonymous volume %s is not supported: name it (NAME:%s) so it stays with its machine", v.Target, v.Target)
		}
		return v.Source + ":" + v.Target + ro, ""
	case types.VolumeTypeBind:
		return v.Source + ":" + v.Target + ro, ""
	}
	return "", fmt.Sprintf("volume type %s (%s) is not supported", v.Type, v.Target)
}
