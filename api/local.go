package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DefaultSocket is where the agent serves the local API.
const DefaultSocket = "/run/uncloud/uncloud.sock"

// DefaultSocketGroup is the group allowed on the socket when it exists.
const DefaultSocketGroup = "uncloud"

// ListenUnix serves the local API on path. With a group (gid >= 0) the
// socket is 0660 and owned by that group, so root and its members may use
// it; without one (gid < 0) it is 0600, for the agent's own user alone.
// The socket is made in a private (0700) directory next to path, given its
// mode and group there, and only then renamed into place: at no moment can
// anyone else connect to it with looser permissions (a chmod after Listen
// leaves a window, and a umask change would be process-wide). A stale
// socket left by a crashed agent is replaced; a live one is an error, so
// two agents never share a data dir by accident.
func ListenUnix(ctx context.Context, path string, gid int) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory for %s: %w", path, err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket path %s exists and is not a socket; remove it by hand", path)
		}
		d := net.Dialer{Timeout: time.Second}
		if c, err := d.DialContext(ctx, "unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another agent is serving it", path)
		} else if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("socket %s exists and cannot be checked: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	private, err := os.MkdirTemp(dir, ".u") // short: a socket path has 108 bytes at most
	if err != nil {
		return nil, fmt.Errorf("private directory for socket %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // it moves; socketListener removes it at its real path
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(tmp, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chown %s to group %d: %w", path, gid, err)
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %o %s: %w", mode, path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("move socket into place at %s: %w", path, err)
	}
	return &socketListener{UnixListener: ul, path: path}, nil
}

// socketListener removes its socket file on Close, as a Go unix listener
// does for the path it was made at.
type socketListener struct {
	*net.UnixListener
	path string
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if err == nil {
		os.Remove(l.path)
	}
	return err
}
