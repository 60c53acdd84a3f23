package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// forNobody makes h's private dirs and a copy of the uncloud binary at src
// usable by nobody (uid and gid 65534) and returns the copy's path: the
// lab's binary sits under a directory nobody may not enter.
func forNobody(t *testing.T, h *lab.Host, src string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "uncloud-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "uncloud")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"lib", "run"} {
		if err := os.Chown(filepath.Join(h.Dir, d), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(h.Dir, 0o755)
	return bin
}

// asNobody is setpriv's arguments to run bin with args as nobody, without
// groups or capabilities: h.Start(label, "setpriv", asNobody(bin, args...)...).
func asNobody(bin string, args ...string) []string {
	return append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin}, args...)
}
