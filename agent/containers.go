package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/tun"
)

// localDocker is this machine's Docker as the network uses it: the local
// runtime when Docker answers and the mesh runs in the kernel (and why
// not otherwise), the machine API that serves it to the other machines,
// and the container records it reports. Orchestration reaches it through
// the engine in orchestration.go.
type localDocker struct {
	machineID   string
	machineName func() string // the name changes at runtime (rename)
	log         *slog.Logger
	rt          *runtime.Runtime  // nil when containers cannot run here at all
	records     *containerRecords // what the runtime reports goes to the state here
	unseal      *unsealer         // opens specs' sealed values (secrets.go)
	// imageMaxBytes bounds one pushed image tarball.
	imageMaxBytes int64
	execs         execSlots // attached execs running here (exec.go)

	// push is this machine's image registry (push.go), or nil and pushErr
	// says why there is none; under mu.
	push    *pushRegistry
	pushErr error

	// changed is told when containers start or stop being able to run
	// here (the gossip metadata says so to the other machines).
	changed func()

	mu    sync.Mutex
	ready bool
	why   error // why not ready
}

// capability says whether containers can run here: "yes", or "no: " and
// why, at most maxCapability bytes (it travels in gossip metadata).
func (p *localDocker) capability() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready {
		return "yes"
	}
	why := "no"
	if p.why != nil {
		why += ": " + p.why.Error()
	}
	if len(why) > maxCapability {
		why = why[:maxCapability-len("…")] + "…"
	}
	return why
}

// maxCapability bounds capability's text in the 512-byte gossip metadata.
const maxCapability = 120

func (p *localDocker) set(ready bool, why error) {
	p.mu.Lock()
	if ready && !p.ready {
		// Said once per transition: the network, the host rules and every
		// container have been checked, so container calls work from now.
		p.log.Info("containers can run here", "component", "runtime")
	}
	flipped := ready != p.ready
	p.ready, p.why = ready, why
	changed := p.changed
	p.mu.Unlock()
	if flipped && changed != nil {
		changed()
	}
}

// netstackContainersErr is why a netstack machine runs no containers:
// the device's reason first (the missing capability, or --userspace), as
// the 120 bytes of gossip metadata may cut the rest. With CAP_NET_ADMIN
// and CAP_NET_RAW the agent would be in kernel mode, over a TUN or its
// veth stand-in, and run them.
func netstackContainersErr(reason string) error {
	if reason == "" {
		reason = "no reason given"
	}
	return fmt.Errorf("the mesh runs in userspace (netstack mode): %s; containers need the mesh in the kernel "+
		"(a TUN, or a veth where /dev/net/tun is missing: CAP_NET_ADMIN and CAP_NET_RAW, as root)", reason)
}

// startContainers starts the runtime's watcher in the background. Docker
// may be absent or come later: the watcher retries, and container calls
// say why they cannot run meanwhile. The agent never stops the
// containers or removes the rules when it exits: they keep serving.
func (d *Daemon) startContainers(ctx context.Context) {
	p := &localDocker{machineID: d.state.MachineID, machineName: func() string { return d.snapshot().Name },
		log: d.log, why: errors.New("not connected yet"), imageMaxBytes: d.opts.ImageMaxBytes,
		execs: newExecSlots()}
	if p.imageMaxBytes <= 0 {
		p.imageMaxBytes = DefaultImageMaxBytes
	}
	p.changed = d.announceMeta
	d.containers = p
	d.Orchestrator = d.newOrchestrator()
	// Gossip started before with no word on containers: say it now.
	defer d.announceMeta()
	if d.dev.Mode() == tun.ModeNetstack {
		why := netstackContainersErr(d.dev.NetstackReason())
		p.set(false, why)
		p.setPushErr(why)
		return
	}
	d.startPushRegistry(ctx, p)
	// The host firewall holds with or without Docker (firewall.go); the
	// runtime applies it through the same controller.
	fw := d.startFirewall(ctx)
	rt, err := runtime.New(runtime.Config{
		Firewall:      fw,
		MachineID:     d.state.MachineID,
		MachineName:   d.snapshot().Name,
		Subnet:        d.state.Subnet,
		MTU:           d.dev.MTU(),
		MeshInterface: d.dev.InterfaceName(),
		DockerHost:    d.opts.DockerHost,
		Logger:        d.log.With("component", "runtime"),
		SecretsDir:    d.secretsDir(),
	})
	if err != nil {
		p.set(false, err)
		d.log.Warn("containers cannot run here", "err", err)
		return
	}
	p.rt = rt
	p.unseal = d.unsealer()
	p.records = &containerRecords{machineID: d.state.MachineID, store: d.store, log: d.log.With("component", "runtime")}
	d.life.closeLast(rt.Close)
	var restoreOnce sync.Once // secrets lost in a reboot, once Docker answers (secrets.go)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		rt.Watch(ctx, p.records, runtime.WatchOptions{
			Ready: func() {
				p.set(true, nil)
				restoreOnce.Do(func() { go p.restoreFiles(ctx) })
			},
			Failed: func(err error) { p.set(false, err) },
		})
	}()
}

// runtime is this machine's runtime, or why containers cannot run.
func (p *localDocker) runtime() (*runtime.Runtime, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rt == nil || !p.ready {
		return nil, fmt.Errorf("%w: Docker is not available on %s: %v", api.ErrUnavailable, p.machineName(), p.why)
	}
	return p.rt, nil
}

func (p *localDocker) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.MachinePathRuntimeContainers, p.handleCreateContainer)
	mux.HandleFunc("POST "+api.MachinePathRuntimeContainers+"/{id}/{action}", p.handleContainerAction)
	mux.HandleFunc("DELETE "+api.MachinePathRuntimeContainers+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		p.doContainerAction(w, r, r.PathValue("id"), "remove")
	})
	mux.HandleFunc("GET "+api.MachinePathRuntimeContainers+"/{id}/logs", p.handleContainerLogs)
	p.imageRoutes(mux)
	p.pushRoutes(mux)
	p.pullRoutes(mux)
	p.imageStoreRoutes(mux)
	mux.HandleFunc("GET "+api.MachinePathRuntimeContainers+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		rt, err := p.runtime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		c, err := rt.Inspect(r.Context(), r.PathValue("id"))
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, containerRecord(p.machineID, c))
	})
	mux.HandleFunc("GET "+api.MachinePathRuntimeReady, func(w http.ResponseWriter, r *http.Request) {
		c, err := p.capacity(r.Context())
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, c)
	})
}

// runtimeStatus maps runtime errors to machine API answers.
func runtimeStatus(err error) int {
	switch {
	case errors.Is(err, runtime.ErrBadSpec):
		return http.StatusBadRequest
	case errors.Is(err, runtime.ErrNotFound), errors.Is(err, runtime.ErrImageNotFound):
		return http.StatusNotFound
	case errors.Is(err, runtime.ErrNameTaken), errors.Is(err, runtime.ErrPortTaken):
		return http.StatusConflict
	case errors.Is(err, runtime.ErrPull):
		return http.StatusBadGateway // the registry's refusal, in its words
	case errors.Is(err, api.ErrUnavailable), errors.Is(err, runtime.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeRuntimeError(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), runtimeStatus(err))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// createLocal makes a container here and records it at once.
func (p *localDocker) create(ctx context.Context, spec runtime.ContainerSpec) (*record.Container, error) {
	rt, err := p.runtime()
	if err != nil {
		return nil, err
	}
	opened, err := p.unseal.open(ctx, spec)
	if err != nil {
		return nil, err
	}
	c, err := rt.CreateWith(ctx, spec, opened)
	if err != nil {
		return nil, err
	}
	if err := rt.Report(ctx, p.records, c.ID); err != nil {
		p.log.Warn("container record not written yet; the watcher retries", "container", c.Name, "err", err)
	}
	return containerRecord(p.machineID, c), nil
}

// act stops, starts, drains or removes a container here.
func (p *localDocker) act(ctx context.Context, id, action string) error {
	rt, err := p.runtime()
	if err != nil {
		return err
	}
	switch action {
	case "stop":
		err = rt.Stop(ctx, id, 10*time.Second)
	case "start":
		err = rt.Start(ctx, id)
	case "remove":
		// A container already gone is removed: the caller acted on a
		// copy of the state that had not yet heard of its removal, and
		// what it asked for holds. Report below clears any record left.
		if err = rt.Remove(ctx, id); errors.Is(err, runtime.ErrNotFound) {
			err = nil
		}
	case "drain":
		// Only the record changes: the container keeps running and
		// serving what it has, while the routes leave it.
		var c *runtime.Container
		if c, err = rt.Inspect(ctx, id); err == nil {
			p.records.drain(c.ID)
		}
	default:
		return fmt.Errorf("%w: unknown container action %q", runtime.ErrBadSpec, action)
	}
	if err != nil {
		return err
	}
	if err := rt.Report(ctx, p.records, id); err != nil {
		p.log.Warn("container record not updated yet; the watcher retries", "container", id, "err", err)
	}
	return nil
}

func (p *localDocker) handleCreateContainer(w http.ResponseWriter, r *http.Request) {
	var spec runtime.ContainerSpec
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&spec); err != nil {
		writeRuntimeError(w, fmt.Errorf("%w: %v", runtime.ErrBadSpec, err))
		return
	}
	c, err := p.create(r.Context(), spec)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, c)
}

func (p *localDocker) handleContainerAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if action == "exec" && api.IsExecUpgrade(r) {
		p.handleExecAttach(w, r)
		return
	}
	if action == "exec" {
		var req api.ContainerExecRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeRuntimeError(w, fmt.Errorf("%w: %v", runtime.ErrBadSpec, err))
			return
		}
		rt, err := p.runtime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		res, err := rt.Exec(r.Context(), r.PathValue("id"), req.Cmd)
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, res)
		return
	}
	p.doContainerAction(w, r, r.PathValue("id"), action)
}

func (p *localDocker) doContainerAction(w http.ResponseWriter, r *http.Request, id, action string) {
	if err := p.act(r.Context(), id, action); err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, struct{}{})
}

// handleContainerLogs streams Docker's log lines (timestamp first), one
// per line, flushed as they come.
func (p *localDocker) handleContainerLogs(w http.ResponseWriter, r *http.Request) {
	rt, err := p.runtime()
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	q := r.URL.Query()
	follow, _ := strconv.ParseBool(q.Get("follow"))
	o := runtime.LogOptions{Follow: follow, Since: q.Get("since"), Until: q.Get("until"), Tail: q.Get("tail")}
	started := false
	flusher, _ := w.(http.Flusher)
	err = rt.Logs(r.Context(), r.PathValue("id"), o, func(line string) error {
		if !started {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			started = true
		}
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return err
		}
		if follow && flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err != nil && !started {
		writeRuntimeError(w, err)
	}
}

// capacity is what this machine's Docker reports, for placement.
func (p *localDocker) capacity(ctx context.Context) (api.RuntimeCapacity, error) {
	rt, err := p.runtime()
	if err != nil {
		return api.RuntimeCapacity{}, err
	}
	cpus, mem, arch, err := rt.Capacity(ctx)
	if err != nil {
		return api.RuntimeCapacity{}, err
	}
	return api.RuntimeCapacity{CPUs: cpus, Memory: mem, Arch: arch}, nil
}
