package api

import (
	"context"
	"net/http"
)

// DNSBackend is what the local API needs for `uncloud dns`; the agent
// implements it next to Backend (NewLocalHandler serves it when the
// backend has it).
type DNSBackend interface {
	// DNSNames lists what this machine's resolver answers now.
	DNSNames(ctx context.Context) (DNSNames, error)
	// DNSQuery asks this machine's resolver one question, in-process.
	DNSQuery(ctx context.Context, name, qtype string) (DNSAnswer, error)
}

// DNSNames is the resolver's zone as this machine sees it: only machines
// it can reach and containers that run there.
type DNSNames struct {
	Listen    []string  `json:"listen"`              // where it serves
	Upstreams []string  `json:"upstreams,omitempty"` // where other names go
	Names     []DNSName `json:"names"`
}

// DNSName is one name and type with its records' data.
type DNSName struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Records []string `json:"records"`
	// Project is set for a name only that project's containers see
	// (<service>.internal inside a project).
	Project string `json:"project,omitempty"`
}

// DNSAnswer is the answer to one question; records are in zone-file text.
type DNSAnswer struct {
	Rcode      string   `json:"rcode"`
	Answer     []string `json:"answer,omitempty"`
	Authority  []string `json:"authority,omitempty"`
	Additional []string `json:"additional,omitempty"`
}

// registerDNS routes GET /v1/dns and GET /v1/dns/query?name=&type=.
func registerDNS(mux *http.ServeMux, b DNSBackend) {
	mux.HandleFunc("GET "+PathDNS, func(w http.ResponseWriter, r *http.Request) {
		n, err := b.DNSNames(r.Context())
		reply(w, n, err)
	})
	mux.HandleFunc("GET "+PathDNSQuery, func(w http.ResponseWriter, r *http.Request) {
		a, err := b.DNSQuery(r.Context(), r.URL.Query().Get("name"), r.URL.Query().Get("type"))
		reply(w, a, err)
	})
}
