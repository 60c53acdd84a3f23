package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/tun"
)

// containerPart is the agent's Docker side: the local runtime when Docker
// answers and the mesh runs in the kernel, and why not otherwise.
type containerPart struct {
	rt     *runtime.Runtime // nil when containers cannot run here at all
	client *http.Client     // runtimeClient

	mu    sync.Mutex
	ready bool
	why   error // why not ready
}

func (p *containerPart) set(ready bool, why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready, p.why = ready, why
}

// errNetstack is why a netstack machine runs no containers.
var errNetstack = errors.New("the mesh runs in userspace (netstack mode) here, so containers could neither reach " +
	"the mesh nor be reached from it; run the agent as root with /dev/net/tun (kernel mode) to run containers on this machine")

// startContainers starts the runtime's watcher in the background. Docker
// may be absent or come later: the watcher retries, and container calls
// say why they cannot run meanwhile. The agent never stops the
// containers or removes the rules when it exits: they keep serving.
func (d *Daemon) startContainers(ctx context.Context) {
	p := &containerPart{why: errors.New("not connected yet")}
	d.containers = p
	if d.dev.Mode() == tun.ModeNetstack {
		p.set(false, errNetstack)
		return
	}
	rt, err := runtime.New(runtime.Config{
		MachineID:     d.state.MachineID,
		MachineName:   d.snapshot().Name,
		Subnet:        d.state.Subnet,
		MTU:           d.dev.MTU(),
		MeshInterface: d.dev.InterfaceName(),
		DockerHost:    d.opts.DockerHost,
		Logger:        d.log.With("component", "runtime"),
	})
	if err != nil {
		p.set(false, err)
		d.log.Warn("containers cannot run here", "err", err)
		return
	}
	p.rt = rt
	d.closers = append(d.closers, rt.Close)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		rt.Watch(ctx, d.store, runtime.WatchOptions{
			Ready:  func() { p.set(true, nil) },
			Failed: func(err error) { p.set(false, err) },
		})
	}()
}

// localRuntime is this machine's runtime, or why containers cannot run.
func (d *Daemon) localRuntime() (*runtime.Runtime, error) {
	p := d.containers
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rt == nil || !p.ready {
		return nil, fmt.Errorf("%w: Docker is not available on %s: %v", api.ErrUnavailable, d.snapshot().Name, p.why)
	}
	return p.rt, nil
}

// Machine API paths of the runtime.
const (
	runtimeContainersPath = "/v1/runtime/containers"
	runtimeReadyPath      = "/v1/runtime/ready"
)

func (d *Daemon) containerRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+runtimeContainersPath, d.handleCreateContainer)
	mux.HandleFunc("POST "+runtimeContainersPath+"/{id}/{action}", d.handleContainerAction)
	mux.HandleFunc("DELETE "+runtimeContainersPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		d.doContainerAction(w, r, r.PathValue("id"), "remove")
	})
	mux.HandleFunc("GET "+runtimeContainersPath+"/{id}/logs", d.handleContainerLogs)
	d.imageRoutes(mux)
	mux.HandleFunc("GET "+runtimeContainersPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		rt, err := d.localRuntime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		c, err := rt.Inspect(r.Context(), r.PathValue("id"))
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, c)
	})
	mux.HandleFunc("GET "+runtimeReadyPath, func(w http.ResponseWriter, r *http.Request) {
		if _, err := d.localRuntime(); err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, struct{}{})
	})
}

// ready keeps the targets that can run containers now (Docker answers,
// kernel mode), asking them all at once; notReady says why the others
// cannot.
func (d *Daemon) ready(ctx context.Context, ts []target) (ready []target, notReady []string) {
	ok := make([]error, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if t.State == "self" {
				_, ok[i] = d.localRuntime()
				return
			}
			if !t.reachable() {
				ok[i] = t.unreachableErr()
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := d.callMachine(cctx, t.ID, "GET", runtimeReadyPath, nil, nil); err != nil {
				ok[i] = d.remoteCallErr(t, err)
			}
		}()
	}
	wg.Wait()
	for i, t := range ts {
		if ok[i] == nil {
			ready = append(ready, t)
		} else {
			notReady = append(notReady, ok[i].Error())
		}
	}
	return ready, notReady
}

// runtimeStatus maps runtime errors to machine API answers.
func runtimeStatus(err error) int {
	switch {
	case errors.Is(err, runtime.ErrBadSpec):
		return http.StatusBadRequest
	case errors.Is(err, runtime.ErrNotFound), errors.Is(err, runtime.ErrImageNotFound):
		return http.StatusNotFound
	case errors.Is(err, runtime.ErrNameTaken):
		return http.StatusConflict
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
func (d *Daemon) createLocal(ctx context.Context, spec runtime.ContainerSpec) (*crdt.Container, error) {
	rt, err := d.localRuntime()
	if err != nil {
		return nil, err
	}
	c, err := rt.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := rt.SyncContainer(ctx, d.store, c.ID); err != nil {
		d.log.Warn("container record not written yet; the watcher retries", "container", c.Name, "err", err)
	}
	return c, nil
}

// actLocal stops, starts, restarts or removes a container here.
func (d *Daemon) actLocal(ctx context.Context, id, action string) error {
	rt, err := d.localRuntime()
	if err != nil {
		return err
	}
	switch action {
	case "stop":
		err = rt.Stop(ctx, id, 10*time.Second)
	case "start":
		err = rt.Start(ctx, id)
	case "remove":
		err = rt.Remove(ctx, id)
	default:
		return fmt.Errorf("%w: unknown container action %q", runtime.ErrBadSpec, action)
	}
	if err != nil {
		return err
	}
	if err := rt.SyncContainer(ctx, d.store, id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		d.log.Warn("container record not updated yet; the watcher retries", "container", id, "err", err)
	}
	return nil
}

func (d *Daemon) handleCreateContainer(w http.ResponseWriter, r *http.Request) {
	var spec runtime.ContainerSpec
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&spec); err != nil {
		writeRuntimeError(w, fmt.Errorf("%w: %v", runtime.ErrBadSpec, err))
		return
	}
	c, err := d.createLocal(r.Context(), spec)
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, c)
}

func (d *Daemon) handleContainerAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if action == "exec" {
		var req struct {
			Cmd []string `json:"cmd"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeRuntimeError(w, fmt.Errorf("%w: %v", runtime.ErrBadSpec, err))
			return
		}
		rt, err := d.localRuntime()
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
	d.doContainerAction(w, r, r.PathValue("id"), action)
}

func (d *Daemon) doContainerAction(w http.ResponseWriter, r *http.Request, id, action string) {
	if err := d.actLocal(r.Context(), id, action); err != nil {
		writeRuntimeError(w, err)
		return
	}
	writeJSON(w, struct{}{})
}

// handleContainerLogs streams Docker's log lines (timestamp first), one
// per line, flushed as they come.
func (d *Daemon) handleContainerLogs(w http.ResponseWriter, r *http.Request) {
	rt, err := d.localRuntime()
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	q := r.URL.Query()
	follow, _ := strconv.ParseBool(q.Get("follow"))
	o := runtime.LogOptions{Follow: follow, Since: q.Get("since"), Tail: q.Get("tail")}
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

// target is a machine containers are placed on or acted upon.
type target struct {
	ID, Name string
	State    string // self, alive, down
	Mode     string // kernel, netstack, or "" when unknown
}

func (t target) reachable() bool { return t.State == "self" || t.State == "alive" }

// unreachableErr is what a call to a machine that gossip sees down gets,
// at once instead of after a connection timeout.
func (t target) unreachableErr() error {
	return fmt.Errorf("%w: machine %s is down or unreachable from this machine", api.ErrUnavailable, t.Name)
}

func (d *Daemon) remoteCallErr(t target, err error) error {
	var re *remoteError
	if errors.As(err, &re) {
		return errors.New(re.Message)
	}
	return fmt.Errorf("%w: machine %s: %v", api.ErrUnavailable, t.Name, err)
}

// create makes a container on t.
func (d *Daemon) create(ctx context.Context, t target, spec runtime.ContainerSpec) (*crdt.Container, error) {
	if t.State == "self" {
		return d.createLocal(ctx, spec)
	}
	if !t.reachable() {
		return nil, t.unreachableErr()
	}
	var c crdt.Container
	if err := d.callRuntime(ctx, t.ID, "POST", runtimeContainersPath, spec, &c); err != nil {
		return nil, d.remoteCallErr(t, err)
	}
	return &c, nil
}

// act stops, starts or removes a container on t.
func (d *Daemon) act(ctx context.Context, t target, id, action string) error {
	if t.State == "self" {
		return d.actLocal(ctx, id, action)
	}
	if !t.reachable() {
		return t.unreachableErr()
	}
	method, path := "POST", runtimeContainersPath+"/"+url.PathEscape(id)+"/"+action
	if action == "remove" {
		method, path = "DELETE", runtimeContainersPath+"/"+url.PathEscape(id)
	}
	if err := d.callRuntime(ctx, t.ID, method, path, nil, nil); err != nil {
		return d.remoteCallErr(t, err)
	}
	return nil
}

// callRuntime is callMachine for container calls, which may wait for
// Docker longer than the machine client's 30 s answer timeout (a create
// or a stop on a busy machine); the caller's context bounds them.
func (d *Daemon) callRuntime(ctx context.Context, machineID, method, path string, in, out any) error {
	return d.callMachineWith(ctx, d.runtimeClient(), machineID, method, path, in, out)
}

// runtimeClient is the machine client without its answer timeout, made
// once (it keeps its own connections).
func (d *Daemon) runtimeClient() *http.Client {
	p := d.containers
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		p.client = d.longMachineClient()
	}
	return p.client
}

// inspect reads a container's state on t, from Docker there.
func (d *Daemon) inspect(ctx context.Context, t target, id string) (*crdt.Container, error) {
	if t.State == "self" {
		rt, err := d.localRuntime()
		if err != nil {
			return nil, err
		}
		return rt.Inspect(ctx, id)
	}
	if !t.reachable() {
		return nil, t.unreachableErr()
	}
	var c crdt.Container
	if err := d.callMachine(ctx, t.ID, "GET", runtimeContainersPath+"/"+url.PathEscape(id), nil, &c); err != nil {
		return nil, d.remoteCallErr(t, err)
	}
	return &c, nil
}

// exec runs a command in a container on t.
func (d *Daemon) exec(ctx context.Context, t target, id string, cmd []string) (runtime.ExecResult, error) {
	if t.State == "self" {
		rt, err := d.localRuntime()
		if err != nil {
			return runtime.ExecResult{}, err
		}
		return rt.Exec(ctx, id, cmd)
	}
	if !t.reachable() {
		return runtime.ExecResult{}, t.unreachableErr()
	}
	var res runtime.ExecResult
	err := d.callRuntime(ctx, t.ID, "POST", runtimeContainersPath+"/"+url.PathEscape(id)+"/exec",
		struct {
			Cmd []string `json:"cmd"`
		}{cmd}, &res)
	if err != nil {
		return res, d.remoteCallErr(t, err)
	}
	return res, nil
}

// logs reads a container's log lines on t (each starting with Docker's
// timestamp).
func (d *Daemon) logs(ctx context.Context, t target, id string, o runtime.LogOptions, line func(string) error) error {
	if t.State == "self" {
		rt, err := d.localRuntime()
		if err != nil {
			return err
		}
		return rt.Logs(ctx, id, o, line)
	}
	if !t.reachable() {
		return t.unreachableErr()
	}
	base, err := d.machineAPIURL(t.ID)
	if err != nil {
		return err
	}
	q := url.Values{"follow": {strconv.FormatBool(o.Follow)}}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Tail != "" {
		q.Set("tail", o.Tail)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+runtimeContainersPath+"/"+url.PathEscape(id)+"/logs?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := d.machineClient.Do(req)
	if err != nil {
		return d.remoteCallErr(t, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return errors.New(string(msg))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 2<<20)
	for sc.Scan() {
		if err := line(sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("logs from %s: %w", t.Name, err)
	}
	return nil
}

var _ api.ContainerBackend = (*Daemon)(nil)
