package record

import (
	"fmt"
	"strings"
	"time"
)

// CertsPrefix holds the ingress's certificate storage: certificates,
// their private keys and ACME account data, one record per storage key.
const CertsPrefix = "/certs/"

const KindCert Kind = "cert"

// Cert is one blob of the ingress certificate storage (certmagic's
// Storage keys, e.g. "certificates/<ca>/<name>/<name>.crt"). Any ingress
// machine may write it: the issuer for a name writes that name's blobs.
// Data is sealed by the ingress for the ingress machines' sealing keys
// (package sealing), so private keys never sit in the state in clear and
// other members cannot read them.
type Cert struct {
	Name     string    `json:"name"`
	Data     []byte    `json:"data"`
	Modified time.Time `json:"modified"`
	// By is the machine that wrote it.
	By string `json:"by,omitempty"`
}

// Key implements Record.
func (c *Cert) Key() string { return CertsPrefix + c.Name }

// Kind implements Record.
func (*Cert) Kind() Kind { return KindCert }

// Validate keeps the name a clean relative path: the record key must not
// change under go-datastore's path cleaning.
func (c *Cert) Validate() error {
	if c.Name == "" || len(c.Name) > 512 || strings.ContainsRune(c.Name, 0) {
		return fmt.Errorf("%w: certificate storage key %q", ErrBadRecord, c.Name)
	}
	for _, part := range strings.Split(c.Name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%w: certificate storage key %q has an empty, . or .. segment", ErrBadRecord, c.Name)
		}
	}
	return nil
}
