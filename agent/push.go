package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/oci"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Pushes of missing layers only (package oci, DESIGN §13): this machine's
// loopback registry, the machine API routes through which targets fetch
// its blobs and the source tells a target to pull, and the blob lifetime
// policy applied at each push.

// DefaultRegistryMaxBytes caps the blobs this machine's Docker pushed and
// the registry keeps for the next push (--registry-max-bytes).
const DefaultRegistryMaxBytes = 10 << 30

// Blob lifetimes (see package oci): blobs of an unfinished pull expire a
// day after their last use; a blob used in the last hour is never
// collected (a push may be using it).
const (
	fetchedBlobTTL = 24 * time.Hour
	blobInUse      = time.Hour
)

// maxImageLayers bounds the layers of a manifest another machine sends.
const maxImageLayers = 1000

// maxConfigBytes bounds an image config.
const maxConfigBytes = 16 << 20

// pushRegistry is this machine's registry and what it needs to push and
// pull through it.
type pushRegistry struct {
	reg      *oci.Registry
	port     int
	self     string // this machine's ID
	maxBytes int64  // cap of the pushed area
	maxImage int64  // bound of one image's blobs (--image-max-bytes)
	calls    *api.MachineClient
	log      *slog.Logger
	platform atomic.Pointer[string] // the engine's, once asked
}

// startPushRegistry serves the registry on 127.0.0.1:port; when it cannot
// (the port is taken), pushes say why and --method load still works.
func (d *Daemon) startPushRegistry(ctx context.Context, p *localDocker) {
	port := d.opts.RegistryPort
	if port == 0 {
		port = oci.DefaultPort
	}
	if port < 0 {
		p.setPushErr(errors.New("the agent's image registry is off (--registry-port -1): push with --method load"))
		return
	}
	log := d.log.With("component", "registry")
	store, err := oci.OpenStore(filepath.Join(d.opts.DataDir, "registry"))
	if err != nil {
		p.setPushErr(err)
		log.Warn("no image registry: pushes to and from this machine need --method load", "err", err)
		return
	}
	ln, err := oci.ListenLoopback(ctx, port)
	if err != nil {
		p.setPushErr(err)
		log.Warn("no image registry: pushes to and from this machine need --method load", "err", err)
		return
	}
	pr := &pushRegistry{reg: oci.New(store, p.imageMaxBytes), port: port, self: d.state.MachineID,
		maxBytes: d.opts.RegistryMaxBytes, maxImage: p.imageMaxBytes, calls: d.machineAPI, log: log}
	if pr.maxBytes <= 0 {
		pr.maxBytes = DefaultRegistryMaxBytes
	}
	pr.collect()
	p.setPush(pr)
	d.goServe("image registry", func() error { return pr.reg.Serve(ctx, ln) })
	d.life.stopAccepting(func() error { return ignoreClosed(ln.Close()) })
	log.Info("image registry on loopback", "port", port)
}

// collect applies the blob lifetimes: the pushed area to its cap, least
// recently used first; fetched blobs of unfinished pulls after a day.
func (pr *pushRegistry) collect() {
	store := pr.reg.Store()
	now := time.Now()
	if n, freed, err := store.Collect(oci.Pushed, pr.maxBytes, time.Time{}, now.Add(-blobInUse)); err != nil {
		pr.log.Warn("collect pushed blobs", "err", err)
	} else if n > 0 {
		pr.log.Info("collected pushed blobs", "blobs", n, "bytes", freed)
	}
	if n, freed, err := store.Collect(oci.Fetched, 0, now.Add(-fetchedBlobTTL), now.Add(-blobInUse)); err != nil {
		pr.log.Warn("collect fetched blobs", "err", err)
	} else if n > 0 {
		pr.log.Info("expired blobs of unfinished pulls", "blobs", n, "bytes", freed)
	}
}

// setPush and setPushErr record this machine's registry, or why it has none.
func (p *localDocker) setPush(pr *pushRegistry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.push, p.pushErr = pr, nil
}

func (p *localDocker) setPushErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.push, p.pushErr = nil, err
}

// pushRegistry is this machine's registry with its runtime, or why a
// registry push cannot use this machine.
func (p *localDocker) pushRegistry() (*pushRegistry, *runtime.Runtime, error) {
	rt, err := p.runtime()
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.push == nil {
		why := p.pushErr
		if why == nil {
			why = errors.New("not started")
		}
		return nil, nil, fmt.Errorf("%w: no image registry on %s: %v", api.ErrUnavailable, p.machineName(), why)
	}
	return p.push, rt, nil
}

func (p *localDocker) pushRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.MachinePathRegistryBlobs+"/{digest}", p.handleRegistryBlob)
	mux.HandleFunc("POST "+api.MachinePathImagePullFrom, p.handlePullFrom)
}

// handleRegistryBlob serves a blob of this machine's store to a target
// that fetches it through.
func (p *localDocker) handleRegistryBlob(w http.ResponseWriter, r *http.Request) {
	pr, _, err := p.pushRegistry()
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	f, err := pr.reg.Store().Open(r.PathValue("digest"))
	if err != nil {
		http.Error(w, fmt.Sprintf("%v on %s", err, p.machineName()), http.StatusNotFound)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, f)
}

// handlePullFrom pulls an image staged on another machine (api.ImagePullFrom)
// and answers ImageProgress lines, the last one final.
func (p *localDocker) handlePullFrom(w http.ResponseWriter, r *http.Request) {
	var req api.ImagePullFrom
	// The manifest travels base64 in JSON: 4/3 of its bound, and room.
	if err := json.NewDecoder(io.LimitReader(r.Body, oci.MaxManifestBytes*2)).Decode(&req); err != nil {
		http.Error(w, fmt.Sprintf("pull request: %v", err), http.StatusBadRequest)
		return
	}
	pr, rt, err := p.pushRegistry()
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	var mu sync.Mutex // lines come from the pull and from its ticker
	emit := func(ip api.ImageProgress) {
		mu.Lock()
		defer mu.Unlock()
		ip.Machine, ip.Image = p.machineName(), req.Image
		enc.Encode(ip)
		if flusher != nil {
			flusher.Flush()
		}
	}
	final, cleanup, err := pr.pullFrom(r.Context(), rt, p.machineName(), req, emit)
	if err != nil {
		p.log.Warn("image pull from another machine failed", "image", req.Image, "source", req.Source, "err", err)
		emit(api.ImageProgress{Status: "failed", Error: err.Error()})
		return
	}
	emit(final)
	if cleanup != nil {
		cleanup()
	}
}
