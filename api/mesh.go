package api

import (
	"context"
	"net/http"
	"time"
)

// MeshBackend is what `uncloud mesh` needs from the agent.
type MeshBackend interface {
	Mesh(ctx context.Context) (MeshStatus, error)
}

// MeshStatus is the answering machine's view of the paths to its peers.
type MeshStatus struct {
	Machine    string          `json:"machine"`
	NAT        string          `json:"nat"` // none, endpoint-independent, symmetric, unknown
	Reflexive  []string        `json:"reflexive,omitempty"`
	Candidates []string        `json:"candidates,omitempty"`
	Keepalive  string          `json:"keepalive"`
	Peers      []MeshPeer      `json:"peers"`
	Relay      MeshRelayStats  `json:"relay"`
	STUN       MeshSTUNStats   `json:"stun"`
	Socket     MeshSocketStats `json:"socket"`
	At         time.Time       `json:"at"`
}

// MeshPeer is the path to one peer.
type MeshPeer struct {
	Machine       string        `json:"machine"`
	PublicKey     string        `json:"public_key"`
	Path          string        `json:"path"` // direct, relayed, probing, rotating
	Endpoint      string        `json:"endpoint,omitempty"`
	Via           string        `json:"via,omitempty"` // the relay machine, when relayed
	NAT           string        `json:"nat,omitempty"` // the peer's own word on its NAT
	LastHandshake time.Time     `json:"last_handshake,omitzero"`
	RTT           time.Duration `json:"rtt,omitempty"`
	Since         time.Time     `json:"since,omitzero"`
	Candidates    []string      `json:"candidates,omitempty"`
	// FirstDirect and FirstRelay: how long the first search took.
	FirstDirect time.Duration `json:"first_direct,omitempty"`
	FirstRelay  time.Duration `json:"first_relay,omitempty"`
}

// MeshRelayStats count relay traffic through and to the machine.
type MeshRelayStats struct {
	Forwarded      uint64 `json:"forwarded"`
	ForwardedBytes uint64 `json:"forwarded_bytes"`
	Delivered      uint64 `json:"delivered"`
	Sent           uint64 `json:"sent"`
	Dropped        uint64 `json:"dropped"`
	Replayed       uint64 `json:"replayed"` // authentic, but a copy of one seen before
	Stale          uint64 `json:"stale"`    // authentic, but sealed outside the clock window
	RateLimited    uint64 `json:"rate_limited"`
	NoRoute        uint64 `json:"no_route"`
	// BudgetMbps is what one sender may relay through this machine, Mbit/s.
	BudgetMbps float64 `json:"budget_mbps"`
}

// MeshSTUNStats count STUN on the WireGuard socket.
type MeshSTUNStats struct {
	Received    uint64 `json:"received"`
	Sent        uint64 `json:"sent"`
	Answered    uint64 `json:"answered"`
	Garbage     uint64 `json:"garbage"`
	Rejected    uint64 `json:"rejected"`
	Duplicate   uint64 `json:"duplicate"`
	Unsolicited uint64 `json:"unsolicited"`
	Limited     uint64 `json:"limited"`
	// Filtered are call-me-maybe candidates dropped: unusable (loopback,
	// the mesh, …), not the sender's, or too many.
	Filtered uint64 `json:"filtered"`
	// ProbesLimited are probes not sent: over the rate for one machine.
	ProbesLimited uint64 `json:"probes_limited"`
}

// MeshSocketStats count what the Bind took out of the WireGuard stream.
type MeshSocketStats struct {
	Control        uint64 `json:"control"`
	ControlDropped uint64 `json:"control_dropped"`
	Unknown        uint64 `json:"unknown"`
	RelayIn        uint64 `json:"relay_in"`
	RelayDelivered uint64 `json:"relay_delivered"`
}

// registerMesh adds GET /v1/mesh to the local API.
func registerMesh(mux *http.ServeMux, b MeshBackend) {
	mux.HandleFunc("GET "+PathMesh, func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Mesh(r.Context())
		reply(w, st, err)
	})
}
