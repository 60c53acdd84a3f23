package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Area is one part of the store, with its own lifetime (see the package doc).
type Area string

const (
	// Pushed holds blobs this machine's Docker pushed: kept, LRU-collected
	// beyond a cap.
	Pushed Area = "pushed"
	// Fetched holds blobs fetched from another machine for this one's
	// Docker: deleted after the pull, expired a day after their last use.
	Fetched Area = "fetched"
)

// ErrBlobNotFound is a blob the store does not have.
var ErrBlobNotFound = errors.New("blob not found")

// ErrDigestMismatch is content that is not what its digest or size says.
var ErrDigestMismatch = errors.New("blob content does not match its digest")

// Store is the blobs on disk: DIR/{pushed,fetched}/sha256/HEX, and
// DIR/tmp for blobs being written.
type Store struct {
	dir string
}

// OpenStore opens (making it if needed) the store under dir, and removes
// temporary files left by a process that died while writing.
func OpenStore(dir string) (*Store, error) {
	s := &Store{dir: dir}
	for _, d := range []string{s.tmpDir(), s.areaDir(Pushed), s.areaDir(Fetched)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob store %s: %w", dir, err)
		}
	}
	left, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	for _, e := range left {
		os.Remove(filepath.Join(s.tmpDir(), e.Name()))
	}
	return s, nil
}

func (s *Store) tmpDir() string                 { return filepath.Join(s.dir, "tmp") }
func (s *Store) areaDir(a Area) string          { return filepath.Join(s.dir, string(a), "sha256") }
func (s *Store) path(a Area, hex string) string { return filepath.Join(s.areaDir(a), hex) }

// ParseDigest checks that d is "sha256:" and 64 lowercase hex digits and
// returns the hex part: the only digests the store takes, so a digest can
// never name a path outside it.
func ParseDigest(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", d)
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", d)
		}
	}
	return h, nil
}

// find is the area holding digest d, and its path.
func (s *Store) find(d string) (string, error) {
	h, err := ParseDigest(d)
	if err != nil {
		return "", err
	}
	for _, a := range []Area{Pushed, Fetched} {
		p := s.path(a, h)
		if _, err := os.Lstat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrBlobNotFound, d)
}

// Stat is the size of blob d, from its file: its bytes were checked when
// it was written, so a HEAD does not read it again.
func (s *Store) Stat(d string) (int64, error) {
	p, err := s.find(d)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrBlobNotFound, d, err)
	}
	return st.Size(), nil
}

// Open opens blob d for reading and marks it used now (for collection).
func (s *Store) Open(d string) (*os.File, error) {
	p, err := s.find(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBlobNotFound, d, err)
	}
	now := time.Now()
	os.Chtimes(p, now, now) // atime is unreliable (relatime); mtime is the last use
	return f, nil
}

// Has says whether the store holds blob d.
func (s *Store) Has(d string) bool {
	_, err := s.find(d)
	return err == nil
}

// Put writes blob d into area a from r. size is the expected size, or -1
// when unknown; at most max bytes are read (0: no bound). The blob is
// renamed into place only after its digest (and size) check out; on any
// error nothing but the removed temporary file was touched.
func (s *Store) Put(a Area, d string, size, max int64, r io.Reader) (int64, error) {
	w, err := s.NewWriter(a, d, size, max)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		w.Abort()
		return n, err
	}
	return n, w.Commit()
}

// Delete removes blob d from area a (a missing blob is not an error).
func (s *Store) Delete(a Area, d string) error {
	h, err := ParseDigest(d)
	if err != nil {
		return err
	}
	if err := os.Remove(s.path(a, h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// Writer writes one blob: Commit checks it and renames it into place,
// Abort drops it.
type Writer struct {
	s         *Store
	area      Area
	digest    string
	hex       string
	size, max int64
	f         *os.File
	h         hash.Hash
	n         int64
}

// NewWriter starts writing blob d (see Put for size and max).
func (s *Store) NewWriter(a Area, d string, size, max int64) (*Writer, error) {
	h, err := ParseDigest(d)
	if err != nil {
		return nil, err
	}
	if max > 0 && size > max {
		return nil, fmt.Errorf("blob %s is %d bytes, more than the %d this machine takes", d, size, max)
	}
	f, err := os.CreateTemp(s.tmpDir(), h[:12]+"-*")
	if err != nil {
		return nil, fmt.Errorf("write blob %s: %w", d, err)
	}
	return &Writer{s: s, area: a, digest: d, hex: h, size: size, max: max, f: f, h: sha256.New()}, nil
}

// NewUpload starts writing a blob whose digest is known only at the end
// (CommitAs), as a registry upload's.
func (s *Store) NewUpload(a Area, max int64) (*Writer, error) {
	f, err := os.CreateTemp(s.tmpDir(), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	return &Writer{s: s, area: a, digest: "an upload", size: -1, max: max, f: f, h: sha256.New()}, nil
}

// Written is how many bytes the writer took so far.
func (w *Writer) Written() int64 { return w.n }

// CommitAs is Commit for an upload: d is the digest the content must have.
func (w *Writer) CommitAs(d string) error {
	h, err := ParseDigest(d)
	if err != nil {
		w.Abort()
		return err
	}
	w.digest, w.hex = d, h
	return w.Commit()
}

func (w *Writer) Write(p []byte) (int, error) {
	if w.max > 0 && w.n+int64(len(p)) > w.max {
		return 0, fmt.Errorf("blob %s is more than the %d bytes this machine takes", w.digest, w.max)
	}
	if w.size >= 0 && w.n+int64(len(p)) > w.size {
		return 0, fmt.Errorf("%w: %s is longer than its %d bytes", ErrDigestMismatch, w.digest, w.size)
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Abort removes the temporary file.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// Commit checks size and digest, syncs, and renames the blob into place.
func (w *Writer) Commit() error {
	if w.size >= 0 && w.n != w.size {
		w.Abort()
		return fmt.Errorf("%w: %s has %d bytes, want %d", ErrDigestMismatch, w.digest, w.n, w.size)
	}
	if got := hex.EncodeToString(w.h.Sum(nil)); got != w.hex {
		w.Abort()
		return fmt.Errorf("%w: got sha256:%s, want %s", ErrDigestMismatch, got, w.digest)
	}
	// A pushed blob is synced before the rename, so a power loss cannot
	// leave a renamed blob whose bytes never reached the disk: it lives
	// long and is served to every target. A fetched one is not (it lives
	// for one pull, and costs a target a second write of every layer it
	// receives); one torn by a power loss fails Docker's own digest check,
	// and the pull that fails drops it (see the agent's pullFrom).
	if w.area == Pushed {
		if err := w.f.Sync(); err != nil {
			w.Abort()
			return fmt.Errorf("write blob %s: %w", w.digest, err)
		}
	}
	if err := w.f.Close(); err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("write blob %s: %w", w.digest, err)
	}
	if err := os.Rename(w.f.Name(), w.s.path(w.area, w.hex)); err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("write blob %s: %w", w.digest, err)
	}
	return nil
}

// BlobInfo is one stored blob.
type BlobInfo struct {
	Digest  string
	Size    int64
	LastUse time.Time
}

// List is area a's blobs, least recently used first.
func (s *Store) List(a Area) ([]BlobInfo, error) {
	entries, err := os.ReadDir(s.areaDir(a))
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	var out []BlobInfo
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, BlobInfo{Digest: "sha256:" + e.Name(), Size: info.Size(), LastUse: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUse.Before(out[j].LastUse) })
	return out, nil
}

// Collect removes area a's blobs, least recently used first, while the
// area holds more than maxBytes (0: no cap) or a blob was last used before
// expireBefore (zero: none expire); a blob used after keepAfter is never
// removed. It returns the blobs removed and their bytes.
func (s *Store) Collect(a Area, maxBytes int64, expireBefore, keepAfter time.Time) (int, int64, error) {
	blobs, err := s.List(a)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for _, b := range blobs {
		total += b.Size
	}
	n, freed := 0, int64(0)
	for _, b := range blobs {
		over := maxBytes > 0 && total > maxBytes
		expired := !expireBefore.IsZero() && b.LastUse.Before(expireBefore)
		if !over && !expired {
			continue
		}
		if !keepAfter.IsZero() && b.LastUse.After(keepAfter) {
			continue
		}
		if err := s.Delete(a, b.Digest); err != nil {
			return n, freed, err
		}
		n++
		freed += b.Size
		total -= b.Size
	}
	return n, freed, nil
}
