package ingress

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// State is the part of the replicated store the ingress uses: it watches
// services, containers and machines, and keeps certificates in Cert
// records. *crdt.Store implements it.
type State interface {
	Watch(ctx context.Context, prefix string) (<-chan crdt.Change, error)
	Get(ctx context.Context, key string) (crdt.Record, error)
	Put(ctx context.Context, key string, r crdt.Record) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]crdt.Record, error)
}

// certStorage is certmagic's Storage over Cert records. Every value is
// sealed with AES-256-GCM under a key derived from the network secret
// (the record key is the additional data, so a blob cannot be moved to
// another name); every ingress machine holds the secret, nobody else
// reading the state learns a private key.
//
// Its Locker is local to this machine only: an eventually consistent
// store cannot lock across machines. Duplicate orders are prevented by
// the issuer rule instead (see issuer.go): only one machine orders a name.
type certStorage struct {
	st   State
	self string
	keys func() [][]byte // network secrets, the current one first
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]chan struct{}
}

var _ certmagic.Storage = (*certStorage)(nil)

const sealVersion = 1

func sealKey(secret []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, "uncloud ingress certificate storage v1", 32)
}

func (s *certStorage) seal(name string, plain []byte) ([]byte, error) {
	keys := s.keys()
	if len(keys) == 0 {
		return nil, errors.New("no network secret to seal certificate storage with")
	}
	aead, err := newAEAD(keys[0])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:1+aead.NonceSize()], plain, []byte(name)), nil
}

// open returns the plain value and whether it was sealed under an older
// secret than the current one.
func (s *certStorage) open(name string, sealed []byte) ([]byte, bool, error) {
	if len(sealed) < 1 || sealed[0] != sealVersion {
		return nil, false, fmt.Errorf("certificate storage %s: unknown sealing version", name)
	}
	for i, k := range s.keys() {
		aead, err := newAEAD(k)
		if err != nil {
			return nil, false, err
		}
		ns := aead.NonceSize()
		if len(sealed) < 1+ns+aead.Overhead() {
			return nil, false, fmt.Errorf("certificate storage %s: sealed value too short (%d bytes)", name, len(sealed))
		}
		if plain, err := aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(name)); err == nil {
			return plain, i > 0, nil
		}
	}
	return nil, false, fmt.Errorf("certificate storage %s: no network secret opens it (sealed under a retired key?)", name)
}

func newAEAD(secret []byte) (cipher.AEAD, error) {
	k, err := sealKey(secret)
	if err != nil {
		return nil, fmt.Errorf("derive certificate storage key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *certStorage) Store(ctx context.Context, key string, value []byte) error {
	sealed, err := s.seal(key, value)
	if err != nil {
		return err
	}
	rec := &record.Cert{Name: key, Data: sealed, Modified: time.Now().UTC(), By: s.self}
	if err := s.st.Put(ctx, rec.Key(), rec); err != nil {
		return fmt.Errorf("store certificate data %s: %w", key, err)
	}
	return nil
}

func (s *certStorage) get(ctx context.Context, key string) (*record.Cert, error) {
	r, err := s.st.Get(ctx, record.CertsPrefix+key)
	if errors.Is(err, crdt.ErrNotFound) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("load certificate data %s: %w", key, err)
	}
	c, ok := r.(*record.Cert)
	if !ok {
		return nil, fmt.Errorf("load certificate data %s: record is a %T", key, r)
	}
	return c, nil
}

// Load returns the value; a value no current secret opens counts as
// missing (logged), so the issuer obtains a fresh one instead of failing
// forever.
func (s *certStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	plain, old, err := s.open(key, c.Data)
	if err != nil {
		s.log.Warn("certificate storage value unreadable; treated as missing", "key", key, "err", err)
		return nil, fs.ErrNotExist
	}
	if old {
		// Sealed before a secret rotation: re-seal under the current
		// secret while the old one still opens it, so a later rotation
		// that retires the old secret loses nothing.
		if err := s.Store(ctx, key, plain); err != nil {
			s.log.Warn("re-seal certificate storage value", "key", key, "err", err)
		}
	}
	return plain, nil
}

// Delete removes key and, certmagic's directory semantics, everything
// under key/.
func (s *certStorage) Delete(ctx context.Context, key string) error {
	names, err := s.names(ctx, key)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if n == key || strings.HasPrefix(n, key+"/") {
			if err := s.st.Delete(ctx, record.CertsPrefix+n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (s *certStorage) Exists(ctx context.Context, key string) bool {
	if _, err := s.get(ctx, key); err == nil {
		return true
	}
	names, err := s.names(ctx, key)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, key+"/") })
}

// names lists storage keys under prefix (a path; "" is everything).
func (s *certStorage) names(ctx context.Context, prefix string) ([]string, error) {
	recs, err := s.st.List(ctx, record.CertsPrefix+prefix)
	if err != nil {
		return nil, fmt.Errorf("list certificate data under %q: %w", prefix, err)
	}
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		if c, ok := r.(*record.Cert); ok {
			out = append(out, c.Name)
		}
	}
	return out, nil
}

func (s *certStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	names, err := s.names(ctx, path)
	if err != nil {
		return nil, err
	}
	dir := strings.TrimSuffix(path, "/") + "/"
	if path == "" {
		dir = ""
	}
	var out []string
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, dir)
		if !ok || rest == "" {
			continue
		}
		if !recursive {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				n = dir + rest[:i]
			}
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fs.ErrNotExist
	}
	return out, nil
}

func (s *certStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	c, err := s.get(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: c.Modified, Size: int64(len(c.Data)), IsTerminal: true}, nil
	}
	if s.Exists(ctx, key) {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, err
}

// Lock is a lock on this machine only (see the type's comment).
func (s *certStorage) Lock(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		if s.locks == nil {
			s.locks = map[string]chan struct{}{}
		}
		held, ok := s.locks[name]
		if !ok {
			s.locks[name] = make(chan struct{})
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return fmt.Errorf("lock %s: %w", name, ctx.Err())
		}
	}
}

func (s *certStorage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.locks[name]
	if !ok {
		return fmt.Errorf("unlock %s: not locked", name)
	}
	delete(s.locks, name)
	close(held)
	return nil
}
