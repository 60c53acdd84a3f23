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
	ports := append(append([]string{}, r.Ports...), r.Expose...)
	spec := runtime.ContainerSpec{Service: r.Name, Image: r.Image, Cmd: r.Cmd, Env: r.Env,
		Volumes: r.Volumes, Ports: ports, Restart: r.Restart, Health: r.Health,
		Entrypoint: r.Entrypoint, User: r.User, WorkingDir: r.WorkingDir, Labels: r.Labels, Init: r.Init,
		CapAdd: r.CapAdd, CapDrop: r.CapDrop, StopSignal: r.StopSignal, StopGracePeriod: r.StopGracePeriod,
		Ulimits: r.Ulimits, LogDriver: r.LogDriver, LogOptions: r.LogOptions, Tmpfs: r.Tmpfs,
		CPUs: r.CPUs, Memory: r.Memory, ReserveCPUs: r.ReserveCPUs, ReserveMemory: r.ReserveMemory,
		Placement: r.Constraints}
	if err := spec.Validate(); err != nil {
		return spec, fmt.Errorf("%w: service %s: %v", api.ErrBadRequest, r.Name, err)
	}
	if _, err := parseConstraints(r.Constraints); err != nil {
		return spec, fmt.Errorf("service %s: %w", r.Name, err)
	}
	return spec, nil
}
