package ingress

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
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
	"github.com/uncloud-mesh/uncloud/sealing"
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
// sealed (package sealing) for the machines with the ingress role: a
// random data key per blob, wrapped for each ingress machine's public
// sealing key from its machine record, the record key authenticated (a
// blob cannot be moved to another name). Other members, and machines
// removed from the network, cannot open any of it. All blobs are sealed
// alike, certificates and metadata too although they are not secret: one
// format, and the ingress is their only reader.
//
// Blobs written before (format 1: AES-GCM under the network secret, which
// every member holds) are still read while a network secret opens them,
// and re-sealed on first read, with every machine known to the network
// named as exposed (each of them could read it), so removing any of them
// later re-issues that key.
//
// Its Locker is local to this machine only: an eventually consistent
// store cannot lock across machines. Duplicate orders are prevented by
// the issuer rule instead (see issuer.go): only one machine orders a name.
type certStorage struct {
	st   State
	self string
	key  *ecdh.PrivateKey // this machine's sealing key
	// recipients are the ingress machines now, this one included.
	recipients func() []sealing.Recipient
	// legacy are the network secrets, the current one first, for format
	// 1 blobs; nil when there are none. everyone lists the machines that
	// held a network secret (a format 1 blob's exposure).
	legacy   func() [][]byte
	everyone func() []string
	log      *slog.Logger

	mu    sync.Mutex
	locks map[string]chan struct{}
}

var _ certmagic.Storage = (*certStorage)(nil)

const legacyVersion = 1

func (s *certStorage) Store(ctx context.Context, key string, value []byte) error {
	return s.store(ctx, key, value, nil)
}

// store seals value for the ingress machines now; exposed are machines
// that could read this same value before (a re-wrap keeps them).
func (s *certStorage) store(ctx context.Context, key string, value []byte, exposed []string) error {
	sealed, err := sealing.Seal(value, []byte(key), s.recipients(), exposed)
	if err != nil {
		return fmt.Errorf("seal certificate data %s: %w", key, err)
	}
	rec := &record.Cert{Name: key, Data: sealed, Modified: time.Now().UTC(), By: s.self}
	if err := s.st.Put(ctx, rec.Key(), rec); err != nil {
		return fmt.Errorf("store certificate data %s: %w", key, err)
	}
	return nil
}

// open returns a record's plain value and its exposure (who could ever
// read it).
func (s *certStorage) open(c *record.Cert) ([]byte, []string, error) {
	if len(c.Data) > 0 && c.Data[0] == legacyVersion {
		plain, err := s.openLegacy(c.Name, c.Data)
		if err != nil {
			return nil, nil, err
		}
		var all []string
		if s.everyone != nil {
			all = s.everyone()
		}
		return plain, all, nil
	}
	plain, h, err := sealing.Open(c.Data, []byte(c.Name), s.self, s.key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate storage %s: %w", c.Name, err)
	}
	return plain, h.Exposed, nil
}

// legacyKey derives format 1's AES key from a network secret.
func legacyKey(secret []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, secret, nil, "uncloud ingress certificate storage v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive certificate storage key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *certStorage) openLegacy(name string, sealed []byte) ([]byte, error) {
	if s.legacy == nil {
		return nil, fmt.Errorf("certificate storage %s: format 1 and no network secret to open it", name)
	}
	for _, k := range s.legacy() {
		aead, err := legacyKey(k)
		if err != nil {
			return nil, err
		}
		ns := aead.NonceSize()
		if len(sealed) < 1+ns+aead.Overhead() {
			return nil, fmt.Errorf("certificate storage %s: sealed value too short (%d bytes)", name, len(sealed))
		}
		if plain, err := aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(name)); err == nil {
			return plain, nil
		}
	}
	return nil, fmt.Errorf("certificate storage %s: no network secret opens it (format 1, sealed under a retired key?)", name)
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

// Load returns the value; a value this machine cannot open (not wrapped
// for it, or tampered with) counts as missing (logged), so certmagic does
// not fail forever; the maintenance pass (reseal.go) re-wraps or
// re-issues it.
func (s *certStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	plain, exposed, err := s.open(c)
	if err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, sealing.ErrNotRecipient) {
			lvl = slog.LevelDebug // not yet re-wrapped for this machine: expected for a moment
		}
		s.log.Log(ctx, lvl, "certificate storage value unreadable here; treated as missing", "key", key, "err", err)
		return nil, fs.ErrNotExist
	}
	if c.Data[0] == legacyVersion {
		// Re-seal for the ingress machines only while a network secret
		// still opens it; the exposure says everyone could read it.
		if err := s.store(ctx, key, plain, exposed); err != nil {
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
