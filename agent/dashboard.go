package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/uncloud-mesh/uncloud/agent/ui"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
)

// dashboard is the daemon as the web dashboard (agent/ui) reads it: the
// calls the CLI's commands use, plus reachability, the state's watch and
// other machines' views over the machine API.
type dashboard struct{ *Daemon }

var _ ui.Source = dashboard{}

// Reachable implements ui.Source.
func (d dashboard) Reachable() map[string]bool {
	if d.reach == nil {
		return map[string]bool{d.state.MachineID: true}
	}
	return *d.reach.cur.Load()
}

// Changed implements ui.Source: the state's watch and the reachability
// view, coalesced into one signal.
func (d dashboard) Changed(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	poke := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	if d.reach != nil {
		v := d.reach.view(ctx)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-v.Changed():
					poke()
				}
			}
		}()
	}
	changes, err := d.store.Watch(ctx, "/")
	if err != nil {
		d.log.Warn("dashboard: watch the state", "err", err)
		return out
	}
	go func() {
		live := false
		for c := range changes {
			switch {
			case c.Type == crdt.SnapshotDone:
				live = true
			case live:
				poke()
			}
		}
	}()
	return out
}

// PeerView implements ui.Source.
func (d dashboard) PeerView(ctx context.Context, machineID string) (ui.View, error) {
	base, err := d.members.MachineAPIURL(machineID)
	if err != nil {
		return ui.View{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+ui.MachinePathView, nil)
	if err != nil {
		return ui.View{}, err
	}
	resp, err := d.machineAPI.HTTP.Do(req)
	if err != nil {
		return ui.View{}, fmt.Errorf("ask machine %s for its view: %w", machineID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ui.View{}, fmt.Errorf("ask machine %s for its view: %s", machineID, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return ui.View{}, fmt.Errorf("read machine %s's view: %w", machineID, err)
	}
	return ui.DecodeView(b)
}

// dashboardRoutes adds the dashboard to the local API and this machine's
// view to the machine API.
func (d *Daemon) dashboardHandler() (http.Handler, error) {
	return ui.NewServer(dashboard{d}, d.log.With("component", "ui"))
}

func (d *Daemon) machineViewHandler() http.Handler {
	return ui.ViewHandler(dashboard{d}, func() string { return d.state.MachineID })
}

// localAPIHandler is the local API with the dashboard under ui.Prefix.
func (d *Daemon) localAPIHandler() (http.Handler, error) {
	dash, err := d.dashboardHandler()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, dash)
	mux.Handle("/", api.NewLocalHandler(d))
	return mux, nil
}
