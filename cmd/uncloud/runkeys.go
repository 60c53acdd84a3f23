package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/go-units"

	"github.com/uncloud-mesh/uncloud/api"
)

// runKeys are the `uncloud run` flags with the meaning of `docker run`'s
// (and of the Compose keys of the same names).
type runKeys struct {
	Entrypoint    string   `help:"Overwrite the image's entrypoint (one executable; arguments go after the image)."`
	User          string   `short:"u" help:"User to run as: NAME|UID[:GROUP|GID]."`
	Workdir       string   `short:"w" help:"Working directory inside the container."`
	Label         []string `short:"l" help:"Container label KEY=VALUE (not under uncloud.). Repeatable." sep:"none"`
	Init          bool     `help:"Run an init inside the container that forwards signals and reaps processes."`
	CapAdd        []string `name:"cap-add" help:"Add a Linux capability. Repeatable." sep:","`
	CapDrop       []string `name:"cap-drop" help:"Drop a Linux capability. Repeatable." sep:","`
	StopSignal    string   `name:"stop-signal" help:"Signal that stops the container (default: the image's, else SIGTERM)."`
	StopTimeout   string   `name:"stop-timeout" help:"Time to exit after the stop signal before SIGKILL, e.g. 30s (Compose stop_grace_period)."`
	Ulimit        []string `help:"Ulimit NAME=SOFT[:HARD], e.g. nofile=1024:2048. Repeatable." sep:"none"`
	LogDriver     string   `name:"log-driver" help:"Docker logging driver (json-file, local, journald, …)."`
	LogOpt        []string `name:"log-opt" help:"Logging driver option KEY=VALUE. Repeatable." sep:"none"`
	Tmpfs         []string `help:"In-memory mount /path[:options]. Repeatable." sep:"none"`
	CPUs          float64  `name:"cpus" help:"CPU limit, e.g. 1.5 (enforced by Docker)."`
	Memory        string   `help:"Memory limit, e.g. 512m, 2g (enforced by Docker)."`
	ReserveCPUs   float64  `name:"reserve-cpus" help:"CPUs reserved: placement only chooses machines with that many unreserved."`
	ReserveMemory string   `name:"reserve-memory" help:"Memory reserved, e.g. 256m: placement only chooses machines with that much unreserved (also Docker's soft limit)."`
	Constraint    []string `help:"Placement constraint: node.hostname, node.role, node.labels.KEY or node.platform.arch, with == or !=. Repeatable." sep:"none"`
}

// apply writes the flags into a run request.
func (k runKeys) apply(req *api.RunRequest) error {
	if k.Entrypoint != "" {
		req.Entrypoint = []string{k.Entrypoint}
	}
	req.User, req.WorkingDir, req.Init = k.User, k.Workdir, k.Init
	req.CapAdd, req.CapDrop, req.StopSignal = k.CapAdd, k.CapDrop, k.StopSignal
	req.Ulimits, req.LogDriver, req.Tmpfs = k.Ulimit, k.LogDriver, k.Tmpfs
	req.CPUs, req.ReserveCPUs, req.Constraints = k.CPUs, k.ReserveCPUs, k.Constraint
	if k.StopTimeout != "" {
		// docker run --stop-timeout takes seconds; a duration is accepted too.
		if n, err := strconv.Atoi(k.StopTimeout); err == nil {
			req.StopGracePeriod = strconv.Itoa(n) + "s"
		} else {
			req.StopGracePeriod = k.StopTimeout
		}
	}
	var err error
	if req.Labels, err = keyValues("--label", k.Label); err != nil {
		return err
	}
	if req.LogOptions, err = keyValues("--log-opt", k.LogOpt); err != nil {
		return err
	}
	if req.Memory, err = bytesFlag("--memory", k.Memory); err != nil {
		return err
	}
	if req.ReserveMemory, err = bytesFlag("--reserve-memory", k.ReserveMemory); err != nil {
		return err
	}
	return nil
}

// keyValues parses KEY=VALUE flags (a bare KEY is an empty value, as
// Docker's --label takes it).
func keyValues(flag string, in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

// bytesFlag parses 512m, 2g, 1073741824 (Docker's RAMInBytes).
func bytesFlag(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: want a size like 512m or 2g", flag, s)
	}
	return n, nil
}
