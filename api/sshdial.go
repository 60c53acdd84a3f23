package api

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHHost is one host to log in to as ssh(1) would: Target is
// "ssh://[user@]host[:port]", host possibly a ~/.ssh/config alias.
// HostKey checks the host's key (a known_hosts callback, or one that asks
// the user first); it is required: nothing is trusted by default.
type SSHHost struct {
	Target  string
	Options SSHOptions
	HostKey ssh.HostKeyCallback
	// HostKeyAlgorithms, when set, says which host key types to ask the
	// host for (those known_hosts holds for addr), so a host known by its
	// ECDSA key is not mistaken for a changed one offering Ed25519.
	HostKeyAlgorithms func(addr string) []string
}

// DialSSH logs in to h and returns the client and what the target
// resolved to (the address dialled, the user). Commands that install
// uncloud on a host (machine add) run over it.
func DialSSH(ctx context.Context, h SSHHost) (*ssh.Client, SSHTarget, error) {
	u, err := url.Parse(h.Target)
	if err != nil || u.Scheme != "ssh" {
		return nil, SSHTarget{}, fmt.Errorf("ssh target %q: want ssh://[user@]host[:port]", h.Target)
	}
	if h.HostKey == nil {
		return nil, SSHTarget{}, fmt.Errorf("ssh target %q: no host key check", h.Target)
	}
	home, _ := os.UserHomeDir()
	r, err := resolveSSH(u, h.Options.ConfigFile, home)
	if err != nil {
		return nil, r, err
	}
	opts := h.Options
	if opts.IdentityFiles == nil {
		opts.IdentityFiles = r.IdentityFiles
	}
	auth, err := sshAuthMethods(opts, home)
	if err != nil {
		return nil, r, err
	}
	addr := net.JoinHostPort(r.HostName, r.Port)
	config := &ssh.ClientConfig{User: r.User, Auth: auth, HostKeyCallback: h.HostKey, Timeout: 10 * time.Second}
	if h.HostKeyAlgorithms != nil {
		config.HostKeyAlgorithms = h.HostKeyAlgorithms(addr)
	}
	c, err := dialSSH(ctx, addr, config)
	return c, r, err
}

// dialSSH is the TCP dial and SSH handshake, bounded by ctx.
func dialSSH(ctx context.Context, addr string, config *ssh.ClientConfig) (*ssh.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh: handshake with %s as %s: %w", addr, config.User, err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
