package oci

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultPort is the registry's loopback port (--registry-port). Each
// machine has its own loopback, so one fixed port serves every machine.
const DefaultPort = 5115

// MaxManifestBytes bounds a manifest, here and on the wire.
const MaxManifestBytes = 4 << 20

// RepoPrefix starts every session's repository name.
const RepoPrefix = "uncloud-push/"

// Fetch reads blob digest from the machine that has it.
type Fetch func(ctx context.Context, digest string) (io.ReadCloser, error)

// Registry serves the OCI distribution API for the open sessions.
type Registry struct {
	store   *Store
	maxBlob int64

	mu       sync.Mutex
	sessions map[string]*Session // by repository
}

// Session is one push through this registry: a repository of its own (a
// random name that only this push knows), served by a registry instance
// of its own, so whatever a client leaves half done (an upload, a
// manifest) goes away with the session.
type Session struct {
	Repo    string
	reg     *Registry
	handler http.Handler
	fetch   Fetch            // nil: nothing is fetched from elsewhere
	sizes   map[string]int64 // blobs that may be fetched, with their sizes

	ups uploads // unfinished blob uploads (uploads.go)

	fetchedBytes atomic.Int64
	fetchedBlobs atomic.Int64
}

// New makes a registry on store; maxBlob bounds one blob (0: no bound).
func New(store *Store, maxBlob int64) *Registry {
	return &Registry{store: store, maxBlob: maxBlob, sessions: map[string]*Session{}}
}

// Store is the registry's blob store.
func (r *Registry) Store() *Store { return r.store }

// Open starts a session. With fetch, the blobs named in sizes (digest to
// size, from a manifest whose digest was checked) that the store lacks are
// fetched through fetch when asked for; no other blob is.
func (r *Registry) Open(fetch Fetch, sizes map[string]int64) (*Session, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	s := &Session{Repo: RepoPrefix + hex.EncodeToString(b[:]), reg: r, fetch: fetch, sizes: sizes}
	s.handler = registry.New(registry.WithBlobHandler(blobHandler{s}), registry.Logger(log.New(io.Discard, "", 0)))
	r.mu.Lock()
	r.sessions[s.Repo] = s
	r.mu.Unlock()
	return s, nil
}

// Close ends the session: its repository stops answering, and uploads
// it did not finish are dropped.
func (s *Session) Close() {
	s.reg.mu.Lock()
	delete(s.reg.sessions, s.Repo)
	s.reg.mu.Unlock()
	s.ups.abortAll()
}

// Fetched is what the session fetched from elsewhere so far: blobs and bytes.
func (s *Session) Fetched() (blobs, bytes int64) {
	return s.fetchedBlobs.Load(), s.fetchedBytes.Load()
}

// ServeHTTP answers the ping and the repositories of open sessions; every
// body is bounded.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/v2/" || req.URL.Path == "/v2" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.WriteHeader(http.StatusOK)
		return
	}
	rest, _ := strings.CutPrefix(req.URL.Path, "/v2/")
	r.mu.Lock()
	var s *Session
	var after string
	for repo, cand := range r.sessions {
		if a, ok := strings.CutPrefix(rest, repo+"/"); ok &&
			(strings.HasPrefix(a, "blobs/") || strings.HasPrefix(a, "manifests/")) {
			s, after = cand, a
			break
		}
	}
	r.mu.Unlock()
	if s == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errors":[{"code":"NAME_UNKNOWN","message":"no such push session"}]}`)
		return
	}
	limit := int64(MaxManifestBytes)
	if strings.Contains(rest, "/blobs/") && r.maxBlob > 0 {
		limit = r.maxBlob
	}
	if req.ContentLength > limit {
		http.Error(w, fmt.Sprintf("body of %d bytes is more than the %d this machine takes", req.ContentLength, limit), http.StatusRequestEntityTooLarge)
		return
	}
	req.Body = http.MaxBytesReader(w, req.Body, limit)
	if s.serveUpload(w, req, after) {
		return
	}
	s.handler.ServeHTTP(w, req)
}

// Serve serves the registry on ln until ctx ends.
func (r *Registry) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ListenLoopback listens on 127.0.0.1:port, and nowhere else.
func ListenLoopback(ctx context.Context, port int) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("image registry on 127.0.0.1:%d (--registry-port): %w", port, err)
	}
	return ln, nil
}

// Manifest is a manifest's bytes with its media type and digest.
type Manifest struct {
	MediaType string
	Digest    string
	Bytes     []byte
}

// do runs one request against the session's own registry, in process.
func (s *Session) do(ctx context.Context, method, path, contentType string, body []byte) *httptest.ResponseRecorder {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req := httptest.NewRequestWithContext(ctx, method, "/v2/"+s.Repo+path, rd)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	return rec
}

// Manifest reads the manifest a client put under ref (a tag or a digest).
func (s *Session) Manifest(ctx context.Context, ref string) (Manifest, error) {
	rec := s.do(ctx, http.MethodGet, "/manifests/"+ref, "", nil)
	if rec.Code != http.StatusOK {
		return Manifest{}, fmt.Errorf("manifest %s of %s: %d %s", ref, s.Repo, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	b := rec.Body.Bytes()
	h, _, err := v1.SHA256(strings.NewReader(string(b)))
	if err != nil {
		return Manifest{}, err
	}
	return Manifest{MediaType: rec.Header().Get("Content-Type"), Digest: h.String(), Bytes: b}, nil
}

// PutManifest stores m under its digest, which it must match.
func (s *Session) PutManifest(ctx context.Context, m Manifest) error {
	h, _, err := v1.SHA256(strings.NewReader(string(m.Bytes)))
	if err != nil {
		return err
	}
	if h.String() != m.Digest {
		return fmt.Errorf("%w: the manifest's bytes are %s, not %s", ErrDigestMismatch, h, m.Digest)
	}
	rec := s.do(ctx, http.MethodPut, "/manifests/"+m.Digest, m.MediaType, m.Bytes)
	if rec.Code != http.StatusCreated {
		return fmt.Errorf("put manifest %s: %d %s", m.Digest, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	return nil
}

// blobHandler is ggcr's view of the store, for one session.
type blobHandler struct{ s *Session }

func notFound(err error) error {
	if errors.Is(err, ErrBlobNotFound) {
		return registry.ErrNotFound
	}
	return err
}

// fetchable is the size of a blob the session may fetch, or false.
func (b blobHandler) fetchable(d string) (int64, bool) {
	if b.s.fetch == nil {
		return 0, false
	}
	size, ok := b.s.sizes[d]
	return size, ok
}

func (b blobHandler) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	n, err := b.s.reg.store.Stat(h.String())
	if err == nil {
		return n, nil
	}
	if size, ok := b.fetchable(h.String()); ok {
		return size, nil
	}
	return 0, notFound(err)
}

func (b blobHandler) Get(ctx context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := b.s.reg.store.Open(h.String())
	if err == nil {
		return f, nil
	}
	size, ok := b.fetchable(h.String())
	if !ok {
		return nil, notFound(err)
	}
	return b.s.fetchThrough(ctx, h.String(), size)
}

func (b blobHandler) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	_, err := b.s.reg.store.Put(Pushed, h.String(), -1, b.s.reg.maxBlob, rc)
	return err
}

func (b blobHandler) Delete(_ context.Context, _ string, h v1.Hash) error {
	if !b.s.reg.store.Has(h.String()) {
		return registry.ErrNotFound
	}
	if err := b.s.reg.store.Delete(Pushed, h.String()); err != nil {
		return err
	}
	return b.s.reg.store.Delete(Fetched, h.String())
}

// FetchBlob makes sure the store has blob d, fetching it if the session
// may, and opens it.
func (s *Session) FetchBlob(ctx context.Context, d string) (io.ReadCloser, error) {
	rc, err := blobHandler{s}.Get(ctx, s.Repo, v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(d, "sha256:")})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrBlobNotFound, d)
	}
	return rc, err
}

// fetchThrough streams blob d from where the session fetches, writing it
// to the Fetched area as it goes: the blob is there once the reader has
// read it all and its digest checked out (io.EOF only then); a reader
// closed early, or bytes that do not match, leave nothing.
func (s *Session) fetchThrough(ctx context.Context, d string, size int64) (io.ReadCloser, error) {
	w, err := s.reg.store.NewWriter(Fetched, d, size, s.reg.maxBlob)
	if err != nil {
		return nil, err
	}
	body, err := s.fetch(ctx, d)
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("fetch blob %s: %w", d, err)
	}
	return &teeBlob{s: s, body: body, w: w}, nil
}

type teeBlob struct {
	s    *Session
	body io.ReadCloser
	w    *Writer
	done bool // committed, or aborted
}

func (t *teeBlob) Read(p []byte) (int, error) {
	if t.done {
		return 0, io.EOF
	}
	n, err := t.body.Read(p)
	if n > 0 {
		if _, werr := t.w.Write(p[:n]); werr != nil {
			t.done = true
			t.w.Abort()
			return 0, werr
		}
		t.s.fetchedBytes.Add(int64(n))
	}
	// Committed as soon as the declared size is in, before the last bytes
	// are handed on: whoever reads them may act at once.
	if errors.Is(err, io.EOF) || (err == nil && t.w.size >= 0 && t.w.n == t.w.size) {
		t.done = true
		if cerr := t.w.Commit(); cerr != nil {
			return n, cerr
		}
		t.s.fetchedBlobs.Add(1)
		return n, io.EOF
	}
	if err != nil {
		t.done = true
		t.w.Abort()
	}
	return n, err
}

func (t *teeBlob) Close() error {
	if !t.done {
		t.done = true
		t.w.Abort()
	}
	return t.body.Close()
}
