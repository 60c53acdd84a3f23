package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/ingress"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
	"github.com/uncloud-mesh/uncloud/tun"
)

// IngressOptions configure the proxy of a machine with the ingress role.
type IngressOptions struct {
	HTTPAddr  string // default ":80"
	HTTPSAddr string // default ":443"
	// ACMEDirectory is the ACME directory URL (Let's Encrypt by default);
	// ACMERoots is a PEM file trusted for its HTTPS (a private CA).
	ACMEDirectory string
	ACMEEmail     string
	ACMERoots     string
	Policy        string // round_robin (default) or least_conn
	AccessLog     bool
}

// ingressRunner starts and stops the proxy as the machine's roles change.
type ingressRunner struct {
	mu     sync.Mutex
	in     *ingress.Ingress
	cancel context.CancelFunc // ends the running proxy's helpers
	err    error
}

// startIngress follows this machine's own record: the proxy runs while
// the record has the ingress role. Role changes arrive through the watch
// (the record is re-published by `machine role add|rm`).
func (d *Daemon) startIngress(ctx context.Context) {
	r := &ingressRunner{}
	d.ingress = r
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer r.stop()
		for ctx.Err() == nil {
			changes, err := d.store.Watch(ctx, record.MachinesPrefix+d.state.MachineID)
			if err != nil {
				d.log.Error("watch own machine record for the ingress role", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			for ch := range changes {
				m, ok := ch.Record.(*record.Machine)
				if !ok || m.ID != d.state.MachineID {
					continue
				}
				if slices.Contains(m.Roles, ingress.IngressRole) {
					r.start(ctx, d)
				} else {
					r.stop()
				}
			}
		}
	}()
}

func (r *ingressRunner) start(ctx context.Context, d *Daemon) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	in, err := d.newIngress(ctx)
	r.in, r.err = in, err
	if err != nil {
		cancel()
		d.log.Error("ingress role: proxy not started", "err", err)
		return
	}
	r.cancel = cancel
	if h := d.opts.Handover; h != nil {
		go h.waitRoutes(ctx, func() int { return servedRoutes(in) })
	}
}

// servedRoutes counts the routes with a backend: what an upgrade's new
// process waits to serve again before it accepts (handover.go).
func servedRoutes(in *ingress.Ingress) int {
	n := 0
	for _, r := range in.Routes() {
		if len(r.Backends) > 0 {
			n++
		}
	}
	return n
}

// PassListeners hands the ingress's sockets to the process that replaces
// this one; call it before Close. "" when there is no handover.
func (d *Daemon) PassListeners() (string, error) {
	h := d.opts.Handover
	if h == nil {
		return "", nil
	}
	routes := 0
	if d.ingress != nil {
		d.ingress.mu.Lock()
		if d.ingress.in != nil {
			routes = servedRoutes(d.ingress.in)
		}
		d.ingress.mu.Unlock()
	}
	return h.Pass(routes)
}

func (r *ingressRunner) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in != nil {
		r.in.Close()
		r.cancel()
		r.in, r.cancel = nil, nil
	}
	r.err = nil
}

func (d *Daemon) newIngress(ctx context.Context) (*ingress.Ingress, error) {
	o := d.opts.Ingress
	acme := ingress.ACMEConfig{Directory: o.ACMEDirectory, Email: o.ACMEEmail}
	if o.ACMERoots != "" {
		pem, err := os.ReadFile(o.ACMERoots)
		if err != nil {
			return nil, fmt.Errorf("ACME roots: %w", err)
		}
		acme.RootCAs = x509.NewCertPool()
		if !acme.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ACME roots %s: no PEM certificate in it", o.ACMERoots)
		}
	}
	httpAddr := o.HTTPAddr
	if httpAddr == "" {
		httpAddr = ":80"
	}
	// In netstack mode the mesh address lives inside the agent: other
	// ingress machines forward ACME challenges to it there.
	var meshLn net.Listener
	if d.dev.Mode() == tun.ModeNetstack && httpAddr != "-" {
		_, port, err := net.SplitHostPort(httpAddr)
		if err != nil {
			return nil, fmt.Errorf("ingress http address %q: %w", httpAddr, err)
		}
		meshLn, err = d.dev.Listen(ctx, "tcp", net.JoinHostPort(d.state.MeshAddress().String(), port))
		if err != nil {
			return nil, fmt.Errorf("ingress: listen on the mesh address: %w", err)
		}
	}
	sealKey, err := sealing.KeyFromSeed(d.state.IdentitySeed)
	if err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	var access *slog.Logger
	if o.AccessLog {
		access = d.log.With("component", "ingress-access")
	}
	// In kernel mode the mesh is a host interface: no dialer (nil dials
	// directly), which lets plain HTTP take the ingress's epoll loops;
	// the netstack's dialer keeps it on the goroutine path.
	var dial ingress.DialFunc
	if d.dev.Mode() == tun.ModeNetstack {
		dial = d.dev.DialContext
	}
	in, err := ingress.Start(ctx, ingress.Config{
		MachineID:        d.state.MachineID,
		State:            d.store,
		Reach:            d.reach.view(ctx),
		Dial:             dial,
		HTTPAddr:         httpAddr,
		HTTPSAddr:        o.HTTPSAddr,
		MeshHTTPListener: meshLn,
		Listen:           d.opts.Handover.listenFunc(),
		Policy:           o.Policy,
		AccessLog:        access,
		Metrics:          d.ingressMetrics,
		Log:              d.log.With("component", "ingress"),
		ACME:             acme,
		SealKey:          sealKey,
		Secrets:          func() [][]byte { return d.snapshot().GossipKeys }, // format 1 blobs only

	})
	if err != nil && meshLn != nil {
		meshLn.Close()
	}
	return in, err
}

// Ingress implements api.Backend.
func (d *Daemon) Ingress(ctx context.Context) (api.IngressStatus, error) {
	st := api.IngressStatus{Machine: d.snapshot().Name, Routes: []api.IngressRoute{}}
	r := d.ingress
	if r == nil {
		return st, nil
	}
	r.mu.Lock()
	in, err := r.in, r.err
	r.mu.Unlock()
	if err != nil {
		st.Error = err.Error()
	}
	if in == nil {
		return st, nil
	}
	st.Running = true
	if a := in.HTTPAddr(); a != nil {
		st.HTTP = a.String()
	}
	if a := in.HTTPSAddr(); a != nil {
		st.HTTPS = a.String()
	}
	st.ACME = in.ACMEDirectory()
	for _, ri := range in.Routes() {
		proto := "http"
		if ri.HTTPS {
			proto = "https"
		}
		ar := api.IngressRoute{Host: ri.Host, Path: ri.Path, Protocol: proto, Service: ri.Service, Port: ri.Port,
			Conflicts: ri.Conflicts, Backends: []api.IngressBackend{}}
		for _, b := range ri.Backends {
			ar.Backends = append(ar.Backends, api.IngressBackend{Container: b.Container, Machine: b.Machine,
				Address: b.Address, InFlight: b.InFlight, Down: b.Down, Failures: b.Failures})
		}
		if ri.Cert != nil {
			ar.Cert = &api.IngressCertificate{State: ri.Cert.State, Issuer: ri.Cert.Issuer, NotAfter: ri.Cert.NotAfter,
				Error: ri.Cert.Error}
		}
		st.Routes = append(st.Routes, ar)
	}
	return st, nil
}
