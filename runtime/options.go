package runtime

import (
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-units"
)

// The basic container keys (entrypoint, user, labels, capabilities,
// stop signal and grace period, ulimits, logging, tmpfs) and resources:
// checked here and handed to Docker as Docker's own fields, so they mean
// what they mean under `docker run` and `docker compose`.

// reservedLabelPrefix is uncloud's own label namespace: user labels may
// not write under it (service, machine and spec must stay true).
const reservedLabelPrefix = "uncloud."

// validateOptions checks the basic keys and resources.
func (s ContainerSpec) validateOptions() error {
	for k := range s.Labels {
		if k == "" || strings.HasPrefix(strings.ToLower(k), reservedLabelPrefix) {
			return fmt.Errorf("%w: label %q: labels under %q are uncloud's own", ErrBadSpec, k, reservedLabelPrefix)
		}
	}
	if _, err := s.stopTimeout(); err != nil {
		return err
	}
	if _, err := s.ulimits(); err != nil {
		return err
	}
	for _, c := range append(append([]string{}, s.CapAdd...), s.CapDrop...) {
		if c == "" || strings.ContainsAny(c, " \t\n") {
			return fmt.Errorf("%w: capability %q", ErrBadSpec, c)
		}
	}
	if s.StopSignal != "" && strings.ContainsAny(s.StopSignal, " \t\n") {
		return fmt.Errorf("%w: stop signal %q", ErrBadSpec, s.StopSignal)
	}
	if len(s.LogOptions) > 0 && s.LogDriver == "" {
		return fmt.Errorf("%w: log options need a log driver", ErrBadSpec)
	}
	for _, t := range s.Tmpfs {
		if path, _, _ := strings.Cut(t, ":"); !strings.HasPrefix(path, "/") {
			return fmt.Errorf("%w: tmpfs %q is not /path[:options]", ErrBadSpec, t)
		}
	}
	if s.CPUs < 0 || s.ReserveCPUs < 0 || s.Memory < 0 || s.ReserveMemory < 0 {
		return fmt.Errorf("%w: resources cannot be negative", ErrBadSpec)
	}
	if s.Memory > 0 && s.Memory < 6<<20 {
		return fmt.Errorf("%w: memory limit %s is below Docker's minimum of 6MiB", ErrBadSpec, units.BytesSize(float64(s.Memory)))
	}
	if s.Memory > 0 && s.ReserveMemory > s.Memory {
		return fmt.Errorf("%w: memory reservation %s is above the limit %s", ErrBadSpec,
			units.BytesSize(float64(s.ReserveMemory)), units.BytesSize(float64(s.Memory)))
	}
	if s.CPUs > 0 && s.ReserveCPUs > s.CPUs {
		return fmt.Errorf("%w: CPU reservation %g is above the limit %g", ErrBadSpec, s.ReserveCPUs, s.CPUs)
	}
	return nil
}

// stopTimeout is the stop grace period in Docker's whole seconds; nil
// when not set.
func (s ContainerSpec) stopTimeout() (*int, error) {
	if s.StopGracePeriod == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s.StopGracePeriod)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("%w: stop grace period %q is not a duration like 30s", ErrBadSpec, s.StopGracePeriod)
	}
	secs := int((d + time.Second - 1) / time.Second)
	return &secs, nil
}

// ulimits parses NAME=SOFT[:HARD] as `docker run --ulimit` does.
func (s ContainerSpec) ulimits() ([]*container.Ulimit, error) {
	var out []*container.Ulimit
	for _, u := range s.Ulimits {
		l, err := units.ParseUlimit(u)
		if err != nil {
			return nil, fmt.Errorf("%w: ulimit %q: %v", ErrBadSpec, u, err)
		}
		out = append(out, &container.Ulimit{Name: l.Name, Soft: l.Soft, Hard: l.Hard})
	}
	return out, nil
}

// applyOptions writes the basic keys and resources into Docker's config.
func (s ContainerSpec) applyOptions(cfg *container.Config, host *container.HostConfig) {
	if len(s.Entrypoint) > 0 {
		cfg.Entrypoint = s.Entrypoint
	}
	cfg.User, cfg.WorkingDir, cfg.StopSignal = s.User, s.WorkingDir, s.StopSignal
	cfg.StopTimeout, _ = s.stopTimeout()
	for k, v := range s.Labels {
		if _, ours := cfg.Labels[k]; !ours {
			cfg.Labels[k] = v
		}
	}
	if s.Init {
		yes := true
		host.Init = &yes
	}
	host.CapAdd, host.CapDrop = s.CapAdd, s.CapDrop
	host.Ulimits, _ = s.ulimits()
	if s.LogDriver != "" {
		host.LogConfig = container.LogConfig{Type: s.LogDriver, Config: s.LogOptions}
	}
	if len(s.Tmpfs) > 0 {
		host.Tmpfs = map[string]string{}
		for _, t := range s.Tmpfs {
			path, opts, _ := strings.Cut(t, ":")
			host.Tmpfs[path] = opts
		}
	}
	host.NanoCPUs = int64(s.CPUs * 1e9)
	host.Memory = s.Memory
	host.MemoryReservation = s.ReserveMemory
}
