package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/agent/ui"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// meshListeners are the agent's fixed ports on its mesh address.
type meshListeners struct {
	machineAPI, join net.Listener
}

// bindMeshListeners binds the machine API's and the join server's ports
// as soon as the mesh address exists. Both ports lie in Linux's (and
// gVisor's) ephemeral range, so a connection made from the mesh address
// first (a state fetch, a call to another machine) could take one as its
// local port and make the bind fail with "address already in use"; it
// did, once, in a join test. Bound first, they are never handed out.
func (d *Daemon) bindMeshListeners(ctx context.Context) error {
	for _, l := range []struct {
		what string
		port int
		ln   *net.Listener
	}{
		{"the machine API", MachineAPIPort, &d.meshListeners.machineAPI},
		{"joins", tun.DefaultJoinPort, &d.meshListeners.join},
	} {
		addr := net.JoinHostPort(d.state.MeshAddress().String(), strconv.Itoa(l.port))
		ln, err := d.dev.Listen(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("listen for %s on %s: %w", l.what, addr, err)
		}
		*l.ln = ln
		d.life.stopAccepting(func() error { return ignoreClosed(ln.Close()) })
	}
	return nil
}

// startMachineAPI serves the machine-to-machine API on the mesh address:
// through WireGuard only, and only to machines whose identity key is in
// the state.
func (d *Daemon) startMachineAPI(ctx context.Context) error {
	ln := d.meshListeners.machineAPI
	mux := http.NewServeMux()
	mux.Handle(crdt.BlocksPath, d.store.BlockHandler())
	mux.HandleFunc("POST "+api.MachinePathReserve, d.members.HandleReserve)
	mux.HandleFunc("POST "+api.MachinePathSelf, d.members.HandleUpdateSelf)
	mux.HandleFunc("GET "+api.MachinePathKeyring, d.members.HandleGetKeyring)
	mux.HandleFunc("POST "+api.MachinePathKeyring, d.members.HandlePushKeyring)
	mux.HandleFunc("POST "+api.MachinePathLeave, d.members.HandleLeave)
	mux.Handle("GET "+ui.MachinePathView, d.machineViewHandler())
	d.containers.routes(mux)
	d.upgradeRoutes(mux) // upgrade.go
	d.goServe("machine API", func() error { return api.ServeMachineAPI(ctx, ln, d.identity, d.members, mux, d.log) })
	return nil
}

func (d *Daemon) startLocalAPI(ctx context.Context) error {
	h, err := d.localAPIHandler()
	if err != nil {
		return err
	}
	ln, err := api.ListenUnix(ctx, d.opts.Socket, d.opts.SocketGID)
	if err != nil {
		return err
	}
	d.goServe("local API", func() error { return api.ServeLocalHandler(ctx, ln, h) })
	d.life.stopAccepting(func() error {
		err := ignoreClosed(ln.Close())
		os.Remove(d.opts.Socket)
		return err
	})
	d.log.Info("local API", "socket", d.opts.Socket)
	return nil
}

func (d *Daemon) goServe(what string, serve func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error(what+" stopped", "err", err)
		}
	}()
}

// Status implements api.Backend.
func (d *Daemon) Status(ctx context.Context) (api.Status, error) {
	self := d.snapshot()
	st := api.Status{
		Version:        d.opts.Version,
		NetworkID:      self.NetworkID,
		MachineID:      self.MachineID,
		Name:           self.Name,
		Address:        self.MeshAddress().String(),
		Mode:           d.mode(),
		Port:           self.ListenPort,
		Roles:          self.Roles,
		GossipKey:      membership.KeyFingerprint(self.GossipKeys[0]),
		GossipKeyEpoch: self.GossipKeyEpoch,
	}
	if d.verifier != nil {
		st.IgnoredRecords = d.verifier.Refused()
	}
	hn := hostNetInfo(d.hostnet.Status())
	st.HostNet = &hn
	peers, err := d.dev.Peers()
	if err != nil {
		return st, err
	}
	names := d.machineNamesBySubnet(ctx)
	for _, p := range peers {
		ps := api.PeerStatus{
			PublicKey:     p.PublicKey.String(),
			LastHandshake: p.LastHandshake,
			RxBytes:       p.RxBytes,
			TxBytes:       p.TxBytes,
		}
		if p.Endpoint.IsValid() {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			ps.AllowedIPs = append(ps.AllowedIPs, a.String())
			if n, ok := names[a]; ok {
				ps.Machine = n
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}

func (d *Daemon) machineNamesBySubnet(ctx context.Context) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	recs, err := d.store.List(ctx, record.MachinesPrefix)
	if err != nil {
		return out
	}
	for _, r := range recs {
		if m, ok := r.(*record.Machine); ok {
			if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil {
				out[n.Prefix()] = m.Name
			}
		}
	}
	return out
}

// StatePutRaw implements api.RawStateBackend, when the options allow it.
func (d *Daemon) StatePutRaw(ctx context.Context, key string, raw []byte) error {
	if !d.opts.RawStateWrites {
		return fmt.Errorf("%w: raw state writes are off (they exist for adversarial tests)", api.ErrBadRequest)
	}
	return d.store.PutUnchecked(ctx, key, raw)
}

// StateList implements api.Backend.
func (d *Daemon) StateList(ctx context.Context, prefix string) ([]api.StateEntry, error) {
	if !strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("%w: prefix %q must start with /", api.ErrBadRequest, prefix)
	}
	recs, err := d.store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.StateEntry, 0, len(recs))
	for _, r := range recs {
		e, err := stateEntry(r)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// StateGet implements api.Backend.
func (d *Daemon) StateGet(ctx context.Context, key string) (api.StateEntry, error) {
	if !strings.HasPrefix(key, "/") {
		return api.StateEntry{}, fmt.Errorf("%w: key %q must start with /", api.ErrBadRequest, key)
	}
	r, err := d.store.Get(ctx, key)
	if errors.Is(err, crdt.ErrNotFound) {
		return api.StateEntry{}, fmt.Errorf("%w: no record at %s", api.ErrNotFound, key)
	}
	if errors.Is(err, record.ErrBadKey) {
		return api.StateEntry{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if err != nil {
		return api.StateEntry{}, err
	}
	return stateEntry(r)
}

func stateEntry(r crdt.Record) (api.StateEntry, error) {
	b, err := json.Marshal(publicView(r))
	if err != nil {
		return api.StateEntry{}, fmt.Errorf("encode record %s: %w", r.Key(), err)
	}
	return api.StateEntry{Key: r.Key(), Value: b}, nil
}

// startJoinServer serves the join call on the mesh address. Only packets
// from the join range reach it that way (tun's join filter lets them reach
// nothing else), and it answers only them.
func (d *Daemon) startJoinServer(ctx context.Context) error {
	ln := d.meshListeners.join
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.JoinPath, d.members.HandleJoin)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	d.goServe("join server", func() error {
		go func() { <-ctx.Done(); srv.Close() }()
		return srv.Serve(ln)
	})
	return nil
}

// ignoreClosed treats closing an already closed listener as success: the
// server's own shutdown closes it first.
func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// CreateToken implements api.Backend (membership issues tokens).
func (d *Daemon) CreateToken(ctx context.Context, req api.TokenRequest) (api.TokenInfo, error) {
	return d.members.CreateToken(ctx, req)
}

// ListTokens implements api.Backend: the tokens this machine issued.
func (d *Daemon) ListTokens(ctx context.Context) ([]api.TokenInfo, error) {
	return d.members.ListTokens(ctx)
}

// RevokeToken implements api.Backend.
func (d *Daemon) RevokeToken(ctx context.Context, id string) error {
	return d.members.RevokeToken(ctx, id)
}

// Leave implements api.LeaveBackend: another member removes this one.
func (d *Daemon) Leave(ctx context.Context) (api.LeaveResult, error) { return d.members.Leave(ctx) }

// RemoveMachine implements api.Backend (membership revokes and rotates).
func (d *Daemon) RemoveMachine(ctx context.Context, nameOrID string) (api.RemoveResult, error) {
	return d.members.RemoveMachine(ctx, nameOrID)
}

// UpdateMachine implements api.Backend: rename a machine or change its roles.
func (d *Daemon) UpdateMachine(ctx context.Context, nameOrID string, u api.MachineUpdate) (api.MachineInfo, error) {
	return d.members.UpdateMachine(ctx, nameOrID, u)
}
