package api

import (
	"crypto/ed25519"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// keySet is a mutable authorizer, standing in for the replicated machine
// records (the real ones are tested with the agent).
type keySet struct {
	mu   sync.Mutex
	keys map[string]string // encoded key -> machine ID
}

func (k *keySet) AuthorizeMachine(pub ed25519.PublicKey) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if id, ok := k.keys[EncodeKey(pub)]; ok {
		return id, nil
	}
	return "", ErrUnknownMachine
}

func (k *keySet) set(pub ed25519.PublicKey, id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if id == "" {
		delete(k.keys, EncodeKey(pub))
		return
	}
	k.keys[EncodeKey(pub)] = id
}

func startMachineAPI(t *testing.T, server *Identity, auth Authorizer) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLS(server, auth))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: CallerMiddleware(auth, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := Caller(r.Context())
			io.WriteString(w, "hello "+id)
		})),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func call(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + ": " + strings.TrimSpace(string(b)), nil
}

func TestMutualTLS(t *testing.T) {
	server, _ := GenerateIdentity()
	known, _ := GenerateIdentity()
	stranger, _ := GenerateIdentity()
	auth := &keySet{keys: map[string]string{}}
	auth.set(known.PublicKey(), "machine-known")
	url := startMachineAPI(t, server, auth)

	client := func(id *Identity, pin ed25519.PublicKey) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: ClientTLS(id, pin)}, Timeout: 5 * time.Second}
	}

	tests := []struct {
		name    string
		id      *Identity
		pin     ed25519.PublicKey
		want    string // substring of the answer, or of the error
		wantErr bool
	}{
		{"known machine, right pin", known, server.PublicKey(), "200 OK: hello machine-known", false},
		{"unknown machine", stranger, server.PublicKey(), "", true},
		{"server is not the pinned machine", known, stranger.PublicKey(), "is not the pinned", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := call(client(tt.id, tt.pin), url+"/")
			if tt.wantErr {
				if err == nil {
					t.Fatalf("call succeeded with %q, want an error", got)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error = %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil || !strings.Contains(got, tt.want) {
				t.Fatalf("call = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestRevokedMachineLosesAnOpenConnection(t *testing.T) {
	server, _ := GenerateIdentity()
	known, _ := GenerateIdentity()
	auth := &keySet{keys: map[string]string{}}
	auth.set(known.PublicKey(), "m1")
	url := startMachineAPI(t, server, auth)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ClientTLS(known, server.PublicKey())}, Timeout: 5 * time.Second}
	if got, err := call(c, url); err != nil || !strings.HasPrefix(got, "200") {
		t.Fatalf("first call = %q, %v", got, err)
	}
	auth.set(known.PublicKey(), "") // revoked while the keep-alive connection stays open
	got, err := call(c, url)
	if err != nil || !strings.HasPrefix(got, "403") {
		t.Fatalf("call after revocation = %q, %v; want 403", got, err)
	}
}

func TestPlainTLSClientWithoutCertificateIsRejected(t *testing.T) {
	server, _ := GenerateIdentity()
	url := startMachineAPI(t, server, &keySet{keys: map[string]string{}})
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		// TLS 1.3 reports the client-certificate failure on first read.
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("server accepted a client without a certificate")
	}
	var ne net.Error
	if ok := asNetTimeout(err, &ne); ok {
		t.Fatalf("server neither accepted nor rejected: %v", err)
	}
}

func asNetTimeout(err error, ne *net.Error) bool {
	if e, ok := err.(net.Error); ok && e.Timeout() {
		*ne = e
		return true
	}
	return false
}

func TestIdentityRoundTrip(t *testing.T) {
	id, _ := GenerateIdentity()
	again, err := NewIdentity(id.Seed())
	if err != nil || !again.PublicKey().Equal(id.PublicKey()) {
		t.Fatalf("NewIdentity(Seed()) = %v, %v", again, err)
	}
	if _, err := NewIdentity([]byte("short")); err == nil {
		t.Fatal("short seed accepted")
	}
	pub, err := DecodeKey(EncodeKey(id.PublicKey()))
	if err != nil || !pub.Equal(id.PublicKey()) {
		t.Fatalf("DecodeKey(EncodeKey()) = %v, %v", pub, err)
	}
	for _, bad := range []string{"", "!!", "AAAA"} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("DecodeKey(%q) accepted", bad)
		}
	}
}
