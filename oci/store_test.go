package oci

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// files lists every regular file under dir, relative.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestStorePutVerifiesBeforeRename(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	blob := randomBytes(t, 100_000)
	d := digestOf(blob)

	// Wrong bytes under d: refused, and nothing stays (not the blob, not a
	// temporary file).
	wrong := append([]byte{}, blob...)
	wrong[500] ^= 1
	if _, err := s.Put(Pushed, d, -1, 0, bytes.NewReader(wrong)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Put of wrong bytes: %v, want ErrDigestMismatch", err)
	}
	// Too short for the declared size, and too long: refused too.
	if _, err := s.Put(Fetched, d, int64(len(blob)), 0, bytes.NewReader(blob[:1000])); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Put of a short blob: %v", err)
	}
	if _, err := s.Put(Fetched, d, 10, 0, bytes.NewReader(blob)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Put of a long blob: %v", err)
	}
	// More than the machine takes.
	if _, err := s.Put(Pushed, d, -1, 1000, bytes.NewReader(blob)); err == nil {
		t.Fatal("Put beyond max worked")
	}
	if got := files(t, dir); len(got) != 0 {
		t.Fatalf("refused puts left files: %v", got)
	}
	if s.Has(d) {
		t.Fatal("store has a refused blob")
	}

	if _, err := s.Put(Pushed, d, int64(len(blob)), 0, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, blob) {
		t.Fatal("blob read back differs")
	}
	if _, err := s.Put(Pushed, "sha256:../../etc/passwd", -1, 0, bytes.NewReader(blob)); err == nil {
		t.Fatal("a digest naming a path was taken")
	}
}

// TestStoreStatFromSize: Stat answers from the file's size without reading
// it (a blob whose bytes changed on disk but not its size still says its
// size), and says not found for what is absent.
func TestStoreStatFromSize(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := randomBytes(t, 4321)
	d := digestOf(blob)
	if _, err := s.Stat(d); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("Stat of an absent blob: %v", err)
	}
	if _, err := s.Put(Fetched, d, -1, 0, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	h, _ := ParseDigest(d)
	p := s.path(Fetched, h)
	if err := os.WriteFile(p, make([]byte, 4321), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := s.Stat(d)
	if err != nil || n != 4321 {
		t.Fatalf("Stat = %d, %v; want 4321", n, err)
	}
}

// TestStoreKillMidWrite: a process killed (SIGKILL) while it writes a blob
// leaves no blob; the temporary file is removed when the store opens next.
func TestStoreKillMidWrite(t *testing.T) {
	if dir := os.Getenv("OCI_TEST_WRITER_DIR"); dir != "" {
		// The child: write the first half of a blob, say so, wait to die.
		s, err := OpenStore(dir)
		if err != nil {
			os.Exit(2)
		}
		size, _ := strconv.ParseInt(os.Getenv("OCI_TEST_WRITER_SIZE"), 10, 64)
		w, err := s.NewWriter(Fetched, os.Getenv("OCI_TEST_WRITER_DIGEST"), size, 0)
		if err != nil {
			os.Exit(3)
		}
		w.Write(make([]byte, size/2))
		os.Stdout.WriteString("half\n")
		time.Sleep(time.Minute)
		os.Exit(4)
	}
	dir := t.TempDir()
	blob := randomBytes(t, 1<<20)
	d := digestOf(blob)
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreKillMidWrite$")
	cmd.Env = append(os.Environ(), "OCI_TEST_WRITER_DIR="+dir, "OCI_TEST_WRITER_DIGEST="+d,
		"OCI_TEST_WRITER_SIZE="+strconv.Itoa(len(blob)))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "half\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not start writing: %q %v", buf, err)
	}
	if len(files(t, filepath.Join(dir, "tmp"))) != 1 {
		t.Fatalf("the child's temporary file is not there: %v", files(t, dir))
	}
	cmd.Process.Kill()
	cmd.Wait()

	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Has(d) {
		t.Fatal("a blob killed mid-write is in the store")
	}
	if got := files(t, dir); len(got) != 0 {
		t.Fatalf("a blob killed mid-write left files: %v", got)
	}
}

func TestStoreCollect(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var ds []string
	for i := range 4 {
		b := randomBytes(t, 1000)
		d := digestOf(b)
		if _, err := s.Put(Pushed, d, -1, 0, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		h, _ := ParseDigest(d)
		used := now.Add(-time.Duration(4-i) * time.Hour) // ds[0] the least recently used
		os.Chtimes(s.path(Pushed, h), used, used)
		ds = append(ds, d)
	}
	// Cap 2500 bytes: the two least recently used go.
	n, freed, err := s.Collect(Pushed, 2500, time.Time{}, time.Time{})
	if err != nil || n != 2 || freed != 2000 {
		t.Fatalf("Collect = %d, %d, %v; want 2, 2000", n, freed, err)
	}
	if s.Has(ds[0]) || s.Has(ds[1]) || !s.Has(ds[2]) || !s.Has(ds[3]) {
		t.Fatal("Collect removed other blobs than the least recently used")
	}
	// Expiry, but the one used in the last 90 minutes is kept.
	n, _, err = s.Collect(Pushed, 0, now, now.Add(-90*time.Minute))
	if err != nil || n != 1 || s.Has(ds[2]) || !s.Has(ds[3]) {
		t.Fatalf("Collect with expiry = %d, %v", n, err)
	}
}
