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
