package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Client reaches an agent's local API: on this machine through the unix
// socket, or on another machine through SSH (ssh://user@host[:port][/socket]),
// like Docker's ssh:// contexts. No port is opened for the CLI on any machine.
type Client struct {
	HTTP *http.Client
	// BaseURL is what request paths are appended to; the host part is a
	// placeholder because the dialer ignores it.
	BaseURL string
	// Target is the agent this client reaches (a socket path or the
	// ssh:// target), named in every error.
	Target string
	// ExecTiming keeps exec streams alive (zero: the defaults).
	ExecTiming ExecTiming

	closeOnce sync.Once
	closer    func() error
}

// NewClient parses a --connect target: "" or a path for the local socket,
// "unix:///path", or "ssh://user@host[:port][/path/to/socket]".
func NewClient(target string, ssh SSHOptions) (*Client, error) {
	dial, closer, err := dialerFor(target, ssh)
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	if target == "" {
		target = DefaultSocket
	}
	return &Client{
		HTTP:    &http.Client{Transport: transport},
		BaseURL: "http://uncloud",
		Target:  target,
		closer:  closer,
	}, nil
}

// Close releases the SSH connection, if any.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if t, ok := c.HTTP.Transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
		if c.closer != nil {
			err = c.closer()
		}
	})
	return err
}

type dialFunc func(ctx context.Context) (net.Conn, error)

func dialerFor(target string, sshOpts SSHOptions) (dialFunc, func() error, error) {
	switch {
	case target == "":
		return unixDialer(DefaultSocket), nil, nil
	case strings.HasPrefix(target, "/"):
		return unixDialer(target), nil, nil
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, nil, fmt.Errorf("connect target %q: %w", target, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return nil, nil, fmt.Errorf("connect target %q: no socket path", target)
		}
		return unixDialer(u.Path), nil, nil
	case "ssh":
		t, err := newSSHTunnel(u, sshOpts)
		if err != nil {
			return nil, nil, err
		}
		return t.dial, t.close, nil
	default:
		return nil, nil, fmt.Errorf("connect target %q: scheme %q is not unix or ssh", target, u.Scheme)
	}
}

func unixDialer(path string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
				return nil, fmt.Errorf("no agent socket at %s (is the agent running? start it with 'uncloud agent'): %w", path, err)
			}
			if errors.Is(err, syscall.EACCES) {
				return nil, fmt.Errorf("socket %s: permission denied (run as root or join the socket's group): %w", path, err)
			}
			return nil, fmt.Errorf("dial agent socket %s: %w", path, err)
		}
		return c, nil
	}
}
