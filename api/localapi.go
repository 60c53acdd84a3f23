package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Backend is what the local API needs from the agent; the agent
// implements it, so this package does not depend on the agent.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	StateList(ctx context.Context, prefix string) ([]StateEntry, error)
	StateGet(ctx context.Context, key string) (StateEntry, error)
	CreateToken(ctx context.Context, req TokenRequest) (TokenInfo, error)
	ListTokens(ctx context.Context) ([]TokenInfo, error)
	RevokeToken(ctx context.Context, id string) error
	Machines(ctx context.Context) ([]MachineInfo, error)
	RemoveMachine(ctx context.Context, nameOrID string) (RemoveResult, error)
	UpdateMachine(ctx context.Context, nameOrID string, u MachineUpdate) (MachineInfo, error)
	MeshBackend
	IngressAPI
}

// MachineUpdate renames a machine or changes its roles; empty fields
// change nothing.
type MachineUpdate struct {
	Name        string   `json:"name,omitempty"`
	AddRoles    []string `json:"add_roles,omitempty"`
	RemoveRoles []string `json:"remove_roles,omitempty"`
	// SetLabels adds or changes the machine's labels (placement
	// constraints node.labels.KEY); RemoveLabels takes keys away.
	SetLabels    map[string]string `json:"set_labels,omitempty"`
	RemoveLabels []string          `json:"remove_labels,omitempty"`
}

// RemoveResult says how far a removal got: the revocation is in the
// state at once, the new gossip key reached Rotated of Machines others.
type RemoveResult struct {
	Name     string   `json:"name"`
	Rotated  int      `json:"rotated"`
	Machines int      `json:"machines"`
	Missed   []string `json:"missed,omitempty"` // they pick the key up when reachable
	// Admitted are the machines the removed one admitted, which stay
	// trusted: if it was compromised, remove them too.
	Admitted []string `json:"admitted,omitempty"`
}

// MachineInfo is one machine of the network as the answering machine sees it.
type MachineInfo struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Subnet        string    `json:"subnet"`
	Address       string    `json:"address"`
	State         string    `json:"state"` // alive, suspect, down, or self
	Mode          string    `json:"mode,omitempty"`
	Version       string    `json:"version,omitempty"`
	Endpoint      string    `json:"endpoint,omitempty"` // in use, from WireGuard
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	Roles         []string  `json:"roles,omitempty"`
	// Labels are the machine's own, for placement constraints.
	Labels map[string]string `json:"labels,omitempty"`
	// Exposed are the host ports a netstack machine forwards from the
	// mesh ("8080/tcp"), as it announces them while alive.
	Exposed []string `json:"exposed,omitempty"`
	// Containers says whether containers can run there: "yes", or "no: "
	// and why; empty when the machine does not say (down, or an older
	// agent).
	Containers string `json:"containers,omitempty"`
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	TTL  time.Duration `json:"ttl"`
	Uses int           `json:"uses"`
	// Local issues the token even when this machine cannot be reached
	// from outside its NAT: the joiner is on the same network.
	Local bool `json:"local,omitempty"`
}

// TokenInfo describes a token; Token (the secret) is set only in the
// answer to CreateToken, never in listings.
type TokenInfo struct {
	ID       string    `json:"id"`
	Token    string    `json:"token,omitempty"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	UsesLeft int       `json:"uses_left"`
	State    string    `json:"state"` // usable, used, expired, revoked
}

// RawStateBackend writes stored records as given (see
// agent.DaemonOptions.RawStateWrites).
type RawStateBackend interface {
	StatePutRaw(ctx context.Context, key string, raw []byte) error
}

// Status describes the machine that answers and what it sees.
type Status struct {
	Version   string   `json:"version"`
	NetworkID string   `json:"network_id"`
	MachineID string   `json:"machine_id"`
	Name      string   `json:"name"`
	Address   string   `json:"address"`
	Mode      string   `json:"mode"`
	Port      uint16   `json:"port"`
	Roles     []string `json:"roles,omitempty"`
	// GossipKey identifies the gossip key in use (a hash, never the key)
	// and its rotation count, so machines can be compared.
	GossipKey      string       `json:"gossip_key"`
	GossipKeyEpoch uint64       `json:"gossip_key_epoch"`
	Peers          []PeerStatus `json:"peers"`
	// IgnoredRecords counts the records this machine refused to believe
	// (unsigned, mis-signed, or signed by a machine that may not write
	// them), by reason.
	IgnoredRecords map[string]uint64 `json:"ignored_records,omitempty"`
	// HostNet is this machine's exposed ports and proxies into the mesh.
	HostNet *HostNet `json:"hostnet,omitempty"`
}

// PeerStatus is one WireGuard peer as this machine sees it.
type PeerStatus struct {
	Machine       string    `json:"machine,omitempty"`
	PublicKey     string    `json:"public_key"`
	Endpoint      string    `json:"endpoint,omitempty"`
	AllowedIPs    []string  `json:"allowed_ips"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       uint64    `json:"rx_bytes"`
	TxBytes       uint64    `json:"tx_bytes"`
}

// StateEntry is one record of the replicated state, as JSON.
type StateEntry struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// NewLocalHandler routes the local API.
func NewLocalHandler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		reply(w, st, err)
	})
	mux.HandleFunc("GET "+PathState, func(w http.ResponseWriter, r *http.Request) {
		prefix := r.URL.Query().Get("prefix")
		if prefix == "" {
			prefix = "/"
		}
		entries, err := b.StateList(r.Context(), prefix)
		reply(w, entries, err)
	})
	mux.HandleFunc("GET "+PathStateGet, func(w http.ResponseWriter, r *http.Request) {
		e, err := b.StateGet(r.Context(), r.URL.Query().Get("key"))
		reply(w, e, err)
	})
	mux.HandleFunc("GET "+PathMachines, func(w http.ResponseWriter, r *http.Request) {
		ms, err := b.Machines(r.Context())
		reply(w, ms, err)
	})
	leaveRoutes(mux, b)   // leave.go
	upgradeRoutes(mux, b) // upgrade.go
	mux.HandleFunc("DELETE "+PathMachines+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.RemoveMachine(r.Context(), r.PathValue("name"))
		reply(w, res, err)
	})
	mux.HandleFunc("PATCH "+PathMachines+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		var u MachineUpdate
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&u); err != nil {
			reply(w, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		m, err := b.UpdateMachine(r.Context(), r.PathValue("name"), u)
		reply(w, m, err)
	})
	mux.HandleFunc("POST "+PathTokens, func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		t, err := b.CreateToken(r.Context(), req)
		reply(w, t, err)
	})
	mux.HandleFunc("GET "+PathTokens, func(w http.ResponseWriter, r *http.Request) {
		ts, err := b.ListTokens(r.Context())
		reply(w, ts, err)
	})
	mux.HandleFunc("DELETE "+PathTokens+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, b.RevokeToken(r.Context(), r.PathValue("id")))
	})
	registerDebug(mux)
	registerMesh(mux, b)
	registerIngress(mux, b)
	if cb, ok := b.(ContainerBackend); ok {
		registerContainerRoutes(mux, cb)
	}
	if db, ok := b.(DNSBackend); ok {
		registerDNS(mux, db)
	}
	if hb, ok := b.(HostNetBackend); ok {
		registerHostNet(mux, hb)
	}
	if rb, ok := b.(RawStateBackend); ok {
		mux.HandleFunc("PUT "+PathStateRaw, func(w http.ResponseWriter, r *http.Request) {
			var sr SignedRecord
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&sr); err != nil {
				reply(w, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
				return
			}
			reply(w, struct{}{}, rb.StatePutRaw(r.Context(), sr.Key, sr.Raw))
		})
	}
	return mux
}

// ServeLocal serves the local API on ln until ctx ends.
func ServeLocal(ctx context.Context, ln net.Listener, b Backend) error {
	return ServeLocalHandler(ctx, ln, NewLocalHandler(b))
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNotFound) {
			code = http.StatusNotFound
		} else if errors.Is(err, ErrBadRequest) {
			code = http.StatusBadRequest
		} else if errors.Is(err, ErrConflict) {
			code = http.StatusConflict
		} else if errors.Is(err, ErrUnavailable) {
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(apiError{Error: err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}
