package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Start makes a lab for a test: it skips the test when not root (fails it
// when $CI is true: there the lab tests must run), fails it
// if the lab cannot be built, and closes the lab when the test ends. If the
// test failed, the tails of every process log are printed first, and with
// UNCLOUD_LAB_KEEP=1 the lab directory is kept.
func Start(t testing.TB) *Lab {
	t.Helper()
	RequireRoot(t)
	l, err := New(t.Context(), Options{
		Logf:    t.Logf,
		KeepDir: os.Getenv("UNCLOUD_LAB_KEEP") == "1",
	})
	if errors.Is(err, ErrNotRoot) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range l.Processes() {
				t.Logf("--- %s (pid %d) stderr, last 3000 bytes:\n%s", p.Name, p.Pid(), tail(p.Log(), 3000))
			}
			saveLogs(t, l)
			if l.keepDir {
				t.Logf("lab directory kept: %s", l.Dir)
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// saveLogs writes every process's whole log under $UNCLOUD_LAB_LOGS/<test>/
// when that is set: the tails above rarely hold the cause of a flaky
// failure.
func saveLogs(t testing.TB, l *Lab) {
	dir := os.Getenv("UNCLOUD_LAB_LOGS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("save logs: %v", err)
		return
	}
	for _, p := range l.Processes() {
		name := fmt.Sprintf("%s.%d.log", strings.ReplaceAll(p.Name, "/", "_"), p.Pid())
		if err := os.WriteFile(filepath.Join(dir, name), []byte(p.Log()), 0o644); err != nil {
			t.Logf("save logs: %v", err)
		}
	}
	t.Logf("whole logs saved in %s", dir)
}

// MustHost is AddHost that fails the test on error.
func (l *Lab) MustHost(t testing.TB, name string, opts HostOptions) *Host {
	t.Helper()
	h, err := l.AddHost(t.Context(), name, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// RequireRoot skips the test when not root, or fails it when $CI is true:
// in CI a skip would hide that the multi-host tests never ran.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but not root: the lab tests must run in CI (.ci/run uses sudo)")
	}
	t.Skip("skipping: needs root for network namespaces (CI runs as root; locally: sudo scripts/test)")
}
