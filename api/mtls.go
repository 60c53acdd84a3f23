package api

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
)

// Authorizer decides whether a key belongs to a known, non-revoked
// machine, and which. The agent implements it from the replicated state.
type Authorizer interface {
	AuthorizeMachine(pub ed25519.PublicKey) (machineID string, err error)
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(pub ed25519.PublicKey) (string, error)

func (f AuthorizerFunc) AuthorizeMachine(pub ed25519.PublicKey) (string, error) { return f(pub) }

// ErrUnknownMachine is returned by authorizers for keys they do not know.
var ErrUnknownMachine = errors.New("unknown machine key")

// ServerTLS accepts only clients whose key auth knows. The check runs in
// the handshake, so an unknown caller never reaches a handler.
func ServerTLS(id *Identity, auth Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			pub, err := peerKey(raw)
			if err != nil {
				return err
			}
			if _, err := auth.AuthorizeMachine(pub); err != nil {
				return fmt.Errorf("machine key %s: %w", EncodeKey(pub), err)
			}
			return nil
		},
	}
}

// ClientTLS presents id and accepts only a server holding want: the
// callee's identity key from its machine record (or from a join token).
func ClientTLS(id *Identity, want ed25519.PublicKey) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		// Chain verification is replaced by pinning below: there is no CA,
		// and the pinned key is the only thing that can make a server valid.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			pub, err := peerKey(raw)
			if err != nil {
				return err
			}
			if !pub.Equal(want) {
				return fmt.Errorf("server key %s is not the pinned %s", EncodeKey(pub), EncodeKey(want))
			}
			return nil
		},
	}
}

type callerKey struct{}

// CallerMiddleware puts the authenticated caller's machine ID in the
// request context for handlers (see Caller).
func CallerMiddleware(auth Authorizer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "mutual TLS required", http.StatusUnauthorized)
			return
		}
		pub, ok := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
		if !ok {
			http.Error(w, "ed25519 client key required", http.StatusUnauthorized)
			return
		}
		// Checked again per request: a machine revoked after the
		// connection was made must not keep using it.
		id, err := auth.AuthorizeMachine(pub)
		if err != nil {
			http.Error(w, "machine not authorized", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, id)))
	})
}

// Caller is the machine ID that CallerMiddleware authenticated.
func Caller(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(callerKey{}).(string)
	return id, ok
}
