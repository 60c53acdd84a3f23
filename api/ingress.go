package api

import (
	"context"
	"net/http"
	"time"
)

// IngressAPI is the ingress part of the local API; Backend embeds it.
type IngressAPI interface {
	Ingress(ctx context.Context) (IngressStatus, error)
}

// IngressStatus is the ingress of the machine that answers.
type IngressStatus struct {
	Machine string `json:"machine"`
	// Running is false on a machine without the ingress role, or when
	// the proxy could not start (Error says why).
	Running bool           `json:"running"`
	HTTP    string         `json:"http,omitempty"`
	HTTPS   string         `json:"https,omitempty"`
	ACME    string         `json:"acme,omitempty"` // directory URL
	Error   string         `json:"error,omitempty"`
	Routes  []IngressRoute `json:"routes"`
}

// IngressRoute is one published host and path.
type IngressRoute struct {
	Host      string              `json:"host"`
	Path      string              `json:"path,omitempty"`
	Protocol  string              `json:"protocol"` // http or https
	Service   string              `json:"service"`
	Port      uint16              `json:"port"`
	Backends  []IngressBackend    `json:"backends"`
	Conflicts []string            `json:"conflicts,omitempty"`
	Cert      *IngressCertificate `json:"certificate,omitempty"`
}

// IngressBackend is a container behind a route.
type IngressBackend struct {
	Container string `json:"container"`
	Machine   string `json:"machine"`
	Address   string `json:"address"`
	InFlight  int64  `json:"in_flight"`
	Down      bool   `json:"down,omitempty"` // put aside after a failure
	Failures  uint64 `json:"failures,omitempty"`
}

// IngressCertificate is the certificate state of an https host.
type IngressCertificate struct {
	State    string    `json:"state"`  // valid, expired, ordering, waiting for <machine>, none
	Issuer   string    `json:"issuer"` // the ingress machine that orders it
	NotAfter time.Time `json:"not_after,omitzero"`
	Error    string    `json:"error,omitempty"`
}

func registerIngress(mux *http.ServeMux, b IngressAPI) {
	mux.HandleFunc("GET "+PathIngress, func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Ingress(r.Context())
		reply(w, st, err)
	})
}
