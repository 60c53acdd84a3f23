package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnixPermissionsAndStaleSocket(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "run", "uncloud.sock")

	ln, err := ListenUnix(ctx, path, -1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode = %v, want socket 0660", st.Mode())
	}

	// A second agent on the same socket is refused while the first lives.
	if _, err := ListenUnix(ctx, path, -1); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second listener error = %v, want 'another agent'", err)
	}

	// A stale socket (agent killed) is replaced. Closing a Go unix
	// listener unlinks the file, so make the stale file by hand.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
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
