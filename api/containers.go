package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ContainerBackend is what the container commands need from the agent.
// NewLocalHandler serves these routes when its Backend implements it.
type ContainerBackend interface {
	// RunService starts a service; progress, when not nil, gets the
	// image's pull on each machine and each container's result as soon
	// as they are known (one call at a time).
	RunService(ctx context.Context, req RunRequest, progress func(RunEvent)) (ServiceResult, error)
	Containers(ctx context.Context) ([]ContainerInfo, error)
	Services(ctx context.Context) ([]ServiceInfo, error)
	InspectService(ctx context.Context, name string) (ServiceDetail, error)
	// ScaleService adds or removes containers; progress as RunService's.
	ScaleService(ctx context.Context, name string, req ScaleRequest, progress func(RunEvent)) (ServiceResult, error)
	RemoveService(ctx context.Context, name string) (ServiceResult, error)
	StopService(ctx context.Context, name string) (ServiceResult, error)
	StartService(ctx context.Context, name string) (ServiceResult, error)
	// ServiceLogs calls line for each log line of the service's
	// containers, merged, until the logs end (or ctx, with Follow).
	ServiceLogs(ctx context.Context, name string, o LogsRequest, line func(LogLine) error) error
	ExecService(ctx context.Context, name string, req ExecRequest) (ExecResult, error)
}

// ExecAttachBackend runs commands with their input and output attached
// (`uncloud exec -i/-t`); the local API serves it on the exec path to
// calls that ask for the exec stream.
type ExecAttachBackend interface {
	// ExecAttach starts req.Cmd in one of the service's containers and
	// returns the session and where it runs. ctx is the call's, which
	// lasts as long as the session; the session ends when the command
	// does, or on its Close.
	ExecAttach(ctx context.Context, name string, req ExecRequest) (ExecSession, ExecTarget, error)
}

// RunRequest starts a service: `uncloud run`.
type RunRequest struct {
	Name     string   `json:"name,omitempty"` // default: from the image name
	Image    string   `json:"image"`
	Cmd      []string `json:"cmd,omitempty"`
	Env      []string `json:"env,omitempty"`
	Volumes  []string `json:"volumes,omitempty"`
	Ports    []string `json:"ports,omitempty"`
	Restart  string   `json:"restart,omitempty"`
	Replicas int      `json:"replicas,omitempty"` // default 1; ignored in global mode
	Mode     string   `json:"mode,omitempty"`     // replicated (default) or global
	Machines []string `json:"machines,omitempty"` // names or IDs; default: every live machine
	// Health is a health check (Docker's test form, e.g. ["CMD", "/probe"]).
	Health []string `json:"health,omitempty"`
	// The health check's timings (Compose's healthcheck keys); zero: 2 s,
	// 2 s, 3 and none.
	HealthInterval    time.Duration `json:"health_interval,omitempty"`
	HealthTimeout     time.Duration `json:"health_timeout,omitempty"`
	HealthRetries     int           `json:"health_retries,omitempty"`
	HealthStartPeriod time.Duration `json:"health_start_period,omitempty"`
	// Update is how rollouts of this service go (Compose's
	// deploy.update_config); nil: the defaults.
	Update *UpdateConfig `json:"update_config,omitempty"`
	// By is the CLI's user@host, kept in the service's history.
	By string `json:"by,omitempty"`
	// AllowFrom is the service's security group: SERVICE, service:NAME,
	// machine:NAME or ingress (record.ParseAllowFrom); empty: open.
	AllowFrom []string `json:"allow_from,omitempty"`
	// Pull is when target machines pull the image: missing (default),
	// always (and re-resolve the tag) or never.
	Pull string `json:"pull,omitempty"`
	// Project is the Compose project the service belongs to (deploy -p).
	Project string `json:"project,omitempty"`
	// RegistryAuth is the CLI user's credentials for the image's
	// registry, for this call's pulls only (never stored).
	RegistryAuth *RegistryAuth `json:"registry_auth,omitempty"`

	// Expose are container ports named without publishing (Compose's
	// expose): SRV records, like a bare port in Ports.
	Expose []string `json:"expose,omitempty"`
	// The basic container keys, with Docker's meaning.
	Entrypoint      []string          `json:"entrypoint,omitempty"`
	User            string            `json:"user,omitempty"`
	WorkingDir      string            `json:"working_dir,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Init            bool              `json:"init,omitempty"`
	CapAdd          []string          `json:"cap_add,omitempty"`
	CapDrop         []string          `json:"cap_drop,omitempty"`
	StopSignal      string            `json:"stop_signal,omitempty"`
	StopGracePeriod string            `json:"stop_grace_period,omitempty"` // Go duration
	Ulimits         []string          `json:"ulimits,omitempty"`           // NAME=SOFT[:HARD]
	LogDriver       string            `json:"log_driver,omitempty"`
	LogOptions      map[string]string `json:"log_options,omitempty"`
	Tmpfs           []string          `json:"tmpfs,omitempty"` // /path[:options]
	// Resources: limits enforced by Docker, reservations counted by
	// placement (memory in bytes).
	CPUs          float64 `json:"cpus,omitempty"`
	Memory        int64   `json:"memory,omitempty"`
	ReserveCPUs   float64 `json:"reserve_cpus,omitempty"`
	ReserveMemory int64   `json:"reserve_memory,omitempty"`
	// Constraints are placement constraints: node.hostname, node.role,
	// node.labels.KEY, node.platform.arch with == or !=.
	Constraints []string `json:"constraints,omitempty"`
	// Files are the secrets and configs mounted in the containers;
	// Secrets the contents to store for them first (api/secrets.go).
	Files   []FileSpec      `json:"files,omitempty"`
	Secrets []SecretContent `json:"secrets,omitempty"`
	// DependsOn orders a deploy (Compose depends_on): service -> condition
	// (service_started, service_healthy, service_completed_successfully).
	DependsOn map[string]string `json:"depends_on,omitempty"`
}

// ServiceResult reports what a command did to each container.
type ServiceResult struct {
	Service    string            `json:"service"`
	Containers []ContainerResult `json:"containers"`
}

// ContainerResult is one container's outcome; Error is empty on success.
type ContainerResult struct {
	Machine string `json:"machine"`
	Name    string `json:"name,omitempty"`
	ID      string `json:"id,omitempty"`
	Address string `json:"address,omitempty"`
	Action  string `json:"action"` // created, removed, stopped, started
	Error   string `json:"error,omitempty"`
}

// RunEvent is one line of a streamed run (POST /v1/services?stream=1):
// a container's result as soon as it is known, and last the whole result.
type RunEvent struct {
	// Image is a step of the image's pull on one machine.
	Image     *ImageProgress   `json:"image,omitempty"`
	Container *ContainerResult `json:"container,omitempty"`
	Result    *ServiceResult   `json:"result,omitempty"`
}

// Failed counts the containers whose action failed.
func (r ServiceResult) Failed() int {
	n := 0
	for _, c := range r.Containers {
		if c.Error != "" {
			n++
		}
	}
	return n
}

// ContainerInfo is one container of the network, from the state.
type ContainerInfo struct {
	Machine   string `json:"machine"`
	MachineID string `json:"machine_id"`
	// MachineState is self, alive, or unreachable (this partition cannot
	// reach it: its containers are shown as last recorded).
	MachineState string `json:"machine_state"`
	ID           string `json:"id"`
	Name         string `json:"name"`
	Service      string `json:"service"`
	Image        string `json:"image"`
	// ImageDigest is what Image was pinned to: the registry's manifest
	// digest, or the local image ID of an image no registry knows.
	ImageDigest string    `json:"image_digest,omitempty"`
	Address     string    `json:"address"`
	State       string    `json:"state"`
	Health      string    `json:"health,omitempty"`
	Ports       []string  `json:"ports,omitempty"`
	Created     time.Time `json:"created,omitzero"`
}

// ServiceInfo is one service: its record and a count of its containers.
type ServiceInfo struct {
	// Name is the service's ID: <service>.<project>, or the bare name in
	// the default project.
	Name string `json:"name"`
	// Project is the project it belongs to ("default" for the bare ones).
	Project string `json:"project"`
	Mode    string `json:"mode"`
	Image   string `json:"image"`
	// ImageDigest is the digest the service's image is pinned to.
	ImageDigest string   `json:"image_digest,omitempty"`
	Ports       []string `json:"ports,omitempty"`
	Running     int      `json:"running"`
	Total       int      `json:"total"`
	Machines    []string `json:"machines,omitempty"`
	// AllowFrom is the security group; empty means open inside the network.
	AllowFrom []string `json:"allow_from,omitempty"`
}

// ServiceDetail is `uncloud inspect`: the service, how it was started,
// and its containers.
type ServiceDetail struct {
	ServiceInfo
	Spec       json.RawMessage `json:"spec,omitempty"`
	Containers []ContainerInfo `json:"containers"`
}

// LogsRequest selects log lines.
type LogsRequest struct {
	// Services are the services whose containers' lines are wanted;
	// none: every service (the multi-service call, GET /v1/logs).
	Services []string `json:"services,omitempty"`
	// Project adds every service of that project (logs -p).
	Project string `json:"project,omitempty"`
	Follow  bool   `json:"follow"`
	// Since and Until bound the lines' times: RFC 3339, Unix seconds,
	// or a duration ago (10m).
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// Tail is how many of each container's last lines (or all).
	Tail string `json:"tail,omitempty"`
}

// LogsBackend reads the logs of several services at once (`uncloud
// logs [SERVICE…]`); the local API serves it on PathLogs.
type LogsBackend interface {
	// Logs calls line for each log line of the selected containers,
	// merged, until the logs end (or ctx, with Follow).
	Logs(ctx context.Context, o LogsRequest, line func(LogLine) error) error
}

// LogLine is one line of a container's log.
type LogLine struct {
	Time      time.Time `json:"time,omitzero"`
	Container string    `json:"container"`
	Machine   string    `json:"machine"`
	Text      string    `json:"text"`
}

// ScaleRequest is the body of a scale call.
type ScaleRequest struct {
	Replicas int `json:"replicas"`
	// RegistryAuth is for machines that must pull the service's pinned
	// image; used for this call only.
	RegistryAuth *RegistryAuth `json:"registry_auth,omitempty"`
}

// ExecRequest runs a command in one container of a service.
type ExecRequest struct {
	Cmd       []string `json:"cmd"`
	Container string   `json:"container,omitempty"` // default: a running one, this machine's first
	// Machine picks the service's running container on that machine
	// (name or ID).
	Machine string `json:"machine,omitempty"`
	// The options are for an attached exec (the exec stream,
	// ExecAttach); the plain call runs Cmd as is.
	ExecOptions
}

// ExecResult is a command's outcome.
type ExecResult struct {
	Container string `json:"container"`
	Machine   string `json:"machine"`
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
}

func decodeBody(r *http.Request, v any) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

// registerContainerRoutes adds the container commands' routes.
func registerContainerRoutes(mux *http.ServeMux, b ContainerBackend) {
	if ib, ok := b.(ImageBackend); ok {
		registerImageRoutes(mux, ib)
	}
	if sb, ok := b.(ImageStoreBackend); ok {
		registerImageStoreRoutes(mux, sb)
	}
	if db, ok := b.(DeployBackend); ok {
		registerDeployRoutes(mux, db)
	}
	if vb, ok := b.(VolumeBackend); ok {
		registerVolumeRoutes(mux, vb)
	}
	if rb, ok := b.(RolloutBackend); ok {
		registerRolloutRoutes(mux, rb)
	}
	if eb, ok := b.(EvacuateBackend); ok {
		registerEvacuateRoutes(mux, eb) // evacuate.go
	}
	mux.HandleFunc("POST "+PathServices, func(w http.ResponseWriter, r *http.Request) {
		var req RunRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		replyService(w, r, func(progress func(RunEvent)) (ServiceResult, error) {
			return b.RunService(r.Context(), req, progress)
		})
	})
	mux.HandleFunc("GET "+PathServices, func(w http.ResponseWriter, r *http.Request) {
		res, err := b.Services(r.Context())
		reply(w, res, err)
	})
	mux.HandleFunc("GET "+PathServices+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.InspectService(r.Context(), r.PathValue("name"))
		reply(w, res, err)
	})
	mux.HandleFunc("DELETE "+PathServices+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.RemoveService(r.Context(), r.PathValue("name"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+PathServices+"/{name}/scale", func(w http.ResponseWriter, r *http.Request) {
		var req ScaleRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		replyService(w, r, func(progress func(RunEvent)) (ServiceResult, error) {
			return b.ScaleService(r.Context(), r.PathValue("name"), req, progress)
		})
	})
	mux.HandleFunc("POST "+PathServices+"/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.StopService(r.Context(), r.PathValue("name"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+PathServices+"/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.StartService(r.Context(), r.PathValue("name"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+PathServices+"/{name}/exec", func(w http.ResponseWriter, r *http.Request) {
		var req ExecRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		if ab, ok := b.(ExecAttachBackend); ok && IsExecUpgrade(r) {
			s, target, err := ab.ExecAttach(r.Context(), r.PathValue("name"), req)
			if err != nil {
				reply(w, nil, err)
				return
			}
			UpgradeExec(r.Context(), w, r, target, s, ExecTiming{})
			return
		}
		res, err := b.ExecService(r.Context(), r.PathValue("name"), req)
		reply(w, res, err)
	})
	mux.HandleFunc("GET "+PathContainers, func(w http.ResponseWriter, r *http.Request) {
		res, err := b.Containers(r.Context())
		reply(w, res, err)
	})
	mux.HandleFunc("GET "+PathServices+"/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		follow, _ := strconv.ParseBool(q.Get("follow"))
		o := LogsRequest{Follow: follow, Since: q.Get("since"), Until: q.Get("until"), Tail: q.Get("tail")}
		streamLines(w, func(emit func(LogLine) error) error {
			return b.ServiceLogs(r.Context(), r.PathValue("name"), o, emit)
		})
	})
	if lb, ok := b.(LogsBackend); ok {
		mux.HandleFunc("GET "+PathLogs, func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			follow, _ := strconv.ParseBool(q.Get("follow"))
			o := LogsRequest{Services: q["service"], Follow: follow, Since: q.Get("since"), Until: q.Get("until"), Tail: q.Get("tail")}
			streamLines(w, func(emit func(LogLine) error) error {
				return lb.Logs(r.Context(), o, emit)
			})
		})
	}
}

// replyService answers a run or scale: its result in one reply, or with
// ?stream=1 pulls and containers as they go (run's progress), then the
// result.
func replyService(w http.ResponseWriter, r *http.Request, run func(progress func(RunEvent)) (ServiceResult, error)) {
	if r.URL.Query().Get("stream") != "1" {
		res, err := run(nil)
		reply(w, res, err)
		return
	}
	streamLines(w, func(emit func(RunEvent) error) error {
		res, err := run(func(e RunEvent) { emit(e) })
		if err != nil {
			return err
		}
		return emit(RunEvent{Result: &res})
	})
}
