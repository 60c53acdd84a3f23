package ui

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
)

// Source is what the dashboard reads and does, all of it through the calls
// the CLI's commands use (the agent implements most of it already).
type Source interface {
	Status(ctx context.Context) (api.Status, error)
	Machines(ctx context.Context) ([]api.MachineInfo, error)
	Mesh(ctx context.Context) (api.MeshStatus, error)
	Services(ctx context.Context) ([]api.ServiceInfo, error)
	Containers(ctx context.Context) ([]api.ContainerInfo, error)
	ScaleService(ctx context.Context, name string, req api.ScaleRequest, progress func(api.RunEvent)) (api.ServiceResult, error)
	RemoveService(ctx context.Context, name string) (api.ServiceResult, error)
	StopService(ctx context.Context, name string) (api.ServiceResult, error)
	StartService(ctx context.Context, name string) (api.ServiceResult, error)
	Rollback(ctx context.Context, service string, req api.RollbackRequest, event func(api.DeployEvent) error) error
	ServiceLogs(ctx context.Context, name string, o api.LogsRequest, line func(api.LogLine) error) error
	// Ingress is this machine's ingress: its routes (published hosts)
	// and their certificates. Certificates live in the shared state, so
	// any ingress machine shows every host's.
	Ingress(ctx context.Context) (api.IngressStatus, error)

	// Reachable is the machine IDs this machine reaches now (gossip alive
	// and a fresh WireGuard session), itself included.
	Reachable() map[string]bool
	// Changed signals (coalesced) when the state or reachability changes,
	// until ctx ends.
	Changed(ctx context.Context) <-chan struct{}
	// PeerView asks another machine for its View over the machine API.
	PeerView(ctx context.Context, machineID string) (View, error)
}

// View is what one machine reports of itself for other machines'
// dashboards: its paths to its peers, whom it reaches, and its host.
type View struct {
	MachineID string          `json:"machine_id"`
	Mesh      api.MeshStatus  `json:"mesh"`
	Reaches   map[string]bool `json:"reaches"` // machine IDs
	Host      HostInfo        `json:"host"`
}

// HostInfo is the machine's host as the dashboard shows it.
type HostInfo struct {
	Arch     string  `json:"arch"`
	Kernel   string  `json:"kernel,omitempty"`
	Load1    float64 `json:"load1"`
	MemTotal uint64  `json:"mem_total,omitempty"` // bytes
	MemAvail uint64  `json:"mem_avail,omitempty"`
}

// maxView bounds a View read from another machine.
const maxView = 1 << 20

// LocalView is this machine's View.
func LocalView(ctx context.Context, src Source, machineID string) (View, error) {
	mesh, err := src.Mesh(ctx)
	if err != nil {
		return View{}, err
	}
	return View{MachineID: machineID, Mesh: mesh, Reaches: src.Reachable(), Host: readHost()}, nil
}

// ViewHandler serves this machine's View on the machine API.
func ViewHandler(src Source, machineID func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := LocalView(r.Context(), src, machineID())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	})
}

// DecodeView reads a View answer, bounded.
func DecodeView(b []byte) (View, error) {
	var v View
	err := json.Unmarshal(b, &v)
	return v, err
}

// readHost reads what /proc says; a missing file leaves its fields zero
// (the page then shows nothing rather than a guess).
func readHost() HostInfo {
	h := HostInfo{Arch: goruntime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			h.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "MemTotal:":
				h.MemTotal = kb << 10
			case "MemAvailable:":
				h.MemAvail = kb << 10
			}
		}
	}
	return h
}
