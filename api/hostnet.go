package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// HostNetBackend is what `uncloud expose` and `uncloud proxy` need from
// the agent; NewLocalHandler serves it when the backend has it.
type HostNetBackend interface {
	// HostNet reports the machine's exposed ports and proxies.
	HostNet(ctx context.Context) (HostNet, error)
	// UpdateHostNet changes them at once and keeps the change.
	UpdateHostNet(ctx context.Context, u HostNetUpdate) (HostNet, error)
}

// HostNet is what a machine's host programs get of the mesh and give to
// it. Listen addresses are local information: only the machine's own
// local API shows them (other machines see the exposed ports alone, in
// MachineInfo).
type HostNet struct {
	Mode string `json:"mode"` // kernel or netstack
	// Exposed are the host ports forwarded from the mesh ("8080/tcp").
	Exposed []string `json:"exposed"`
	// Forwarding is false in kernel mode, where the list is kept but the
	// mesh reaches the host's ports through the interface, as its
	// firewall allows.
	Forwarding bool         `json:"forwarding"`
	SOCKS5     *ProxyStatus `json:"socks5,omitempty"`
	HTTPProxy  *ProxyStatus `json:"http_proxy,omitempty"`
}

// ProxyStatus is a proxy into the mesh: where it listens and whether it
// serves there (and why not).
type ProxyStatus struct {
	Listen  string `json:"listen"`
	Serving bool   `json:"serving"`
	Error   string `json:"error,omitempty"`
}

// HostNetUpdate changes a machine's host networking; empty fields change
// nothing, and a proxy address of "" (or "off") turns that proxy off.
type HostNetUpdate struct {
	AddExpose    []string `json:"add_expose,omitempty"`    // PORT[/tcp|/udp]
	RemoveExpose []string `json:"remove_expose,omitempty"` // PORT[/tcp|/udp]
	SOCKS5       *string  `json:"socks5,omitempty"`        // PORT, :PORT or IP:PORT; "" or off
	HTTPProxy    *string  `json:"http_proxy,omitempty"`
}

// registerHostNet routes GET and PATCH /v1/hostnet.
func registerHostNet(mux *http.ServeMux, b HostNetBackend) {
	mux.HandleFunc("GET "+PathHostNet, func(w http.ResponseWriter, r *http.Request) {
		h, err := b.HostNet(r.Context())
		reply(w, h, err)
	})
	mux.HandleFunc("PATCH "+PathHostNet, func(w http.ResponseWriter, r *http.Request) {
		var u HostNetUpdate
		if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&u); err != nil {
			reply(w, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		h, err := b.UpdateHostNet(r.Context(), u)
		reply(w, h, err)
	})
}

// HostNet reports the machine's exposed ports and proxies.
func (c *Client) HostNet(ctx context.Context) (HostNet, error) {
	var h HostNet
	err := c.call(ctx, "HostNet", http.MethodGet, PathHostNet, nil, &h)
	return h, err
}

// UpdateHostNet changes the machine's exposed ports or proxies.
func (c *Client) UpdateHostNet(ctx context.Context, u HostNetUpdate) (HostNet, error) {
	var h HostNet
	err := c.call(ctx, "UpdateHostNet", http.MethodPatch, PathHostNet, u, &h)
	return h, err
}
