package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenUnixPermissionsAndStaleSocket(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		gid  int
		want os.FileMode
	}{
		{"nogroup", -1, 0o600},
		{"group", os.Getgid(), 0o660},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "run", "uncloud.sock")
			ln, err := ListenUnix(ctx, path, tc.gid)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tc.want || st.Mode()&os.ModeSocket == 0 {
				t.Fatalf("socket mode = %v, want socket %v", st.Mode(), tc.want)
			}
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && tc.gid >= 0 && int(sys.Gid) != tc.gid {
				t.Fatalf("socket group %d, want %d", sys.Gid, tc.gid)
			}
			// Nothing is left of the private directory it was made in.
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Fatalf("socket directory holds %d entries, want the socket alone", len(ents))
			}
		})
	}

	path := filepath.Join(t.TempDir(), "run", "uncloud.sock")
	ln, err := ListenUnix(ctx, path, -1)
	if err != nil {
		t.Fatal(err)
	}
	// A second agent on the same socket is refused while the first lives.
	if _, err := ListenUnix(ctx, path, -1); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second listener error = %v, want 'another agent'", err)
	}
	// Close removes the socket.
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket still there after Close: %v", err)
	}
	// A stale socket (agent killed) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln2, err := ListenUnix(ctx, path, -1)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer ln2.Close()

	// A regular file in the way is not silently deleted.
	other := filepath.Join(t.TempDir(), "not-a-socket")
	os.WriteFile(other, []byte("data"), 0o600)
	if _, err := ListenUnix(ctx, other, -1); err == nil {
		t.Fatal("ListenUnix replaced a regular file")
	}
	if b, _ := os.ReadFile(other); string(b) != "data" {
		t.Fatal("regular file was modified")
	}
}

func TestClientOverUnixSocket(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "uncloud.sock")
	ln, err := ListenUnix(ctx, path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong "+r.URL.Path) })}
	go srv.Serve(ln)
	defer srv.Close()

	for _, target := range []string{path, "unix://" + path} {
		c, err := NewClient(target, SSHOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.HTTP.Get(c.BaseURL + "/ping")
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		if string(b) != "pong /ping" {
			t.Fatalf("%s: got %q", target, b)
		}
	}
}

func TestClientErrorsSayWhatToDo(t *testing.T) {
	tests := []struct{ target, want string }{
		{filepath.Join(t.TempDir(), "missing.sock"), "is the agent running"},
		{"ftp://host", "is not unix or ssh"},
		{"unix://", "no socket path"},
	}
	for _, tt := range tests {
		c, err := NewClient(tt.target, SSHOptions{})
		if err == nil {
			_, err = c.HTTP.Get(c.BaseURL + "/")
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("target %q: error = %v, want %q", tt.target, err, tt.want)
		}
	}
}
