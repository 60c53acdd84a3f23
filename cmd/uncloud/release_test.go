package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseReproducible runs scripts/release twice for linux/amd64, from
// this tree and from a copy of it in another folder, and wants the same
// bytes and the same SHA256SUMS: what makes a published binary checkable
// against its source. Only amd64, twice: the other targets use the same
// flags, and each costs a full link on a 2-core CI machine. The packages
// come from the build cache when the paths do not matter (-trimpath), so
// the copy costs little more than two links.
func TestReleaseReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the release binary twice (about a minute)")
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not found (coreutils); scripts/release needs it")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	copyRoot := filepath.Join(t.TempDir(), "elsewhere")
	copySource(t, root, copyRoot)

	build := func(src string) (bin, sums []byte) {
		t.Helper()
		dist := t.TempDir()
		cmd := exec.Command(filepath.Join(src, "scripts", "release"), "v0.0.0-test")
		cmd.Env = append(os.Environ(), "DIST="+dist, "TARGETS=linux/amd64", "COMMIT=0123456789abcdef")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scripts/release in %s: %v\n%s", src, err, out)
		}
		bin, err := os.ReadFile(filepath.Join(dist, "uncloud-linux-amd64"))
		if err != nil {
			t.Fatal(err)
		}
		sums, err = os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		return bin, sums
	}
	bin1, sums1 := build(root)
	bin2, sums2 := build(copyRoot)

	if !bytes.Equal(bin1, bin2) {
		t.Fatalf("two builds differ: %d and %d bytes (sums: %q, %q)", len(bin1), len(bin2), sums1, sums2)
	}
	if !bytes.Equal(sums1, sums2) || !strings.HasSuffix(string(sums1), "  uncloud-linux-amd64\n") {
		t.Fatalf("SHA256SUMS: %q and %q", sums1, sums2)
	}
	// The stamp reached the one place that holds it, and nothing of this
	// machine's paths did (-trimpath).
	for _, want := range []string{"v0.0.0-test", "0123456789abcdef"} {
		if !bytes.Contains(bin1, []byte(want)) {
			t.Errorf("binary lacks the stamp %q", want)
		}
	}
	if bytes.Contains(bin1, []byte(root)) || bytes.Contains(bin2, []byte(copyRoot)) {
		t.Errorf("binary holds the source folder's path: -trimpath missing")
	}
	t.Logf("uncloud-linux-amd64: %d bytes, %s", len(bin1), strings.Fields(string(sums1))[0])
}

// copySource copies the module's files (not .git, not dist/) to dst.
func copySource(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() && (rel == ".git" || rel == "dist") {
			return filepath.SkipDir
		}
		if d.Name() == ".git" { // a worktree's .git file
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
