package orchestrate

import (
	"fmt"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// specFromRequest is the container spec a run or deploy asks for,
// checked: every key of api.RunRequest that shapes a container, and the
// placement constraints (which travel in the spec so any machine can
// scale the service the same way).
func specFromRequest(r api.RunRequest) (runtime.ContainerSpec, error) {
	spec := specOf(r)
	if err := spec.Validate(); err != nil {
		return spec, fmt.Errorf("%w: service %s: %v", api.ErrBadRequest, r.Name, err)
	}
	if _, err := parseConstraints(r.Constraints); err != nil {
		return spec, fmt.Errorf("service %s: %w", r.Name, err)
	}
	return spec, nil
}

// specOf is the container spec a run or deploy asks for (the pin is added
// once resolved).
func specOf(r api.RunRequest) runtime.ContainerSpec {
	ports := append(append([]string{}, r.Ports...), r.Expose...)
	return runtime.ContainerSpec{Service: r.Name, Image: r.Image, Cmd: r.Cmd, Env: r.Env,
		Volumes: r.Volumes, Ports: ports, Restart: r.Restart, Health: r.Health,
		HealthInterval: r.HealthInterval, HealthTimeout: r.HealthTimeout, HealthRetries: r.HealthRetries,
		HealthStartPeriod: r.HealthStartPeriod,
		Entrypoint:        r.Entrypoint, User: r.User, WorkingDir: r.WorkingDir, Labels: r.Labels, Init: r.Init,
		CapAdd: r.CapAdd, CapDrop: r.CapDrop, StopSignal: r.StopSignal, StopGracePeriod: r.StopGracePeriod,
		Ulimits: r.Ulimits, LogDriver: r.LogDriver, LogOptions: r.LogOptions, Tmpfs: r.Tmpfs,
		CPUs: r.CPUs, Memory: r.Memory, ReserveCPUs: r.ReserveCPUs, ReserveMemory: r.ReserveMemory,
		Placement: r.Constraints}
}

// requestOf is the run request whose specOf is spec's keys: a rollback
// plans a stored version as the deploy that made it did. The keys a run
// request carries outside the spec (mode, replicas, security group,
// update_config) are the caller's to add.
func requestOf(spec runtime.ContainerSpec) api.RunRequest {
	return api.RunRequest{Name: spec.Service, Image: spec.Image, Cmd: spec.Cmd, Env: spec.Env,
		Volumes: spec.Volumes, Ports: spec.Ports, Restart: spec.Restart, Health: spec.Health,
		HealthInterval: spec.HealthInterval, HealthTimeout: spec.HealthTimeout, HealthRetries: spec.HealthRetries,
		HealthStartPeriod: spec.HealthStartPeriod,
		Entrypoint:        spec.Entrypoint, User: spec.User, WorkingDir: spec.WorkingDir, Labels: spec.Labels, Init: spec.Init,
		CapAdd: spec.CapAdd, CapDrop: spec.CapDrop, StopSignal: spec.StopSignal, StopGracePeriod: spec.StopGracePeriod,
		Ulimits: spec.Ulimits, LogDriver: spec.LogDriver, LogOptions: spec.LogOptions, Tmpfs: spec.Tmpfs,
		CPUs: spec.CPUs, Memory: spec.Memory, ReserveCPUs: spec.ReserveCPUs, ReserveMemory: spec.ReserveMemory,
		Constraints: spec.Placement}
}
