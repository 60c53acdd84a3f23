package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/uncloud-mesh/uncloud/api"
)

// A host machine add/init installs on, over one SSH connection
// (golang.org/x/crypto/ssh, as --connect ssh:// uses: the same
// ~/.ssh/config, agent and key handling, and no dependence on the
// system ssh's version or its prompts, which a program cannot read
// reliably).

// maxRemoteOutput bounds what one remote command's output is kept of.
const maxRemoteOutput = 64 << 10

type remoteHost struct {
	client *ssh.Client
	target api.SSHTarget
	// sudo prefixes commands that change the host: "sudo -n " unless
	// the user is root.
	sudo string
}

// run runs cmd (a shell command line) with stdin, and returns its
// standard output; the error carries its standard error.
func (r *remoteHost) run(ctx context.Context, cmd string, stdin io.Reader) (string, error) {
	s, err := r.client.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh session on %s: %w", r.target.HostName, err)
	}
	defer s.Close()
	var out, errOut boundedBuffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errOut, stdin
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Signal(ssh.SIGTERM)
		s.Close()
		return out.String(), fmt.Errorf("%s on %s: %w", cmd, r.target.HostName, ctx.Err())
	}
	if err != nil {
		msg := strings.TrimSpace(errOut.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		return out.String(), fmt.Errorf("%w: %s", err, lastLines(msg, 5))
	}
	return out.String(), nil
}

// boundedBuffer keeps the first maxRemoteOutput bytes written.
type boundedBuffer struct{ bytes.Buffer }

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxRemoteOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shellJoin quotes each argument (shellQuote: completion.go) for the
// remote shell.
func shellJoin(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// hostKeys checks host keys against a known_hosts file as ssh(1) with
// StrictHostKeyChecking=ask would: a known key passes; a changed key is
// refused; an unknown host is added after ask says yes (ask is nil
// without a terminal) or with acceptNew, and refused otherwise.
type hostKeys struct {
	file      string
	acceptNew bool
	ask       func(question string) bool
	added     string // the fingerprint added on first contact, if any
}

func (h *hostKeys) load() (ssh.HostKeyCallback, error) {
	cb, err := knownhosts.New(h.file)
	if errors.Is(err, fs.ErrNotExist) {
		return knownhosts.New(os.DevNull)
	}
	if err != nil {
		return nil, fmt.Errorf("known hosts %s: %w", h.file, err)
	}
	return cb, nil
}

// algorithms are the host key algorithms to ask addr for: those of the
// keys known_hosts holds for it (nil: any, for a host not known yet).
func (h *hostKeys) algorithms(addr string) []string {
	cb, err := h.load()
	if err != nil {
		return nil
	}
	// An impossible key makes the callback list the known ones.
	var ke *knownhosts.KeyError
	if errors.As(cb(addr, &net.TCPAddr{}, probeKey{}), &ke) {
		var algos []string
		for _, k := range ke.Want {
			if k.Key.Type() == ssh.KeyAlgoRSA {
				algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
			}
			algos = append(algos, k.Key.Type())
		}
		return algos
	}
	return nil
}

// probeKey is a key no known_hosts line can hold.
type probeKey struct{ ssh.PublicKey }

func (probeKey) Type() string    { return "uncloud-probe" }
func (probeKey) Marshal() []byte { return []byte("uncloud-probe") }

func (h *hostKeys) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	cb, err := h.load()
	if err != nil {
		return err
	}
	err = cb(hostname, remote, key)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return err // nil, or a revoked key
	}
	fp := ssh.FingerprintSHA256(key)
	name := knownhosts.Normalize(hostname)
	if len(ke.Want) > 0 {
		w := ke.Want[0]
		return fmt.Errorf("the host key of %s has CHANGED: it offers %s %s, but %s line %d holds %s %s. "+
			"Someone may be intercepting the connection, or the host was reinstalled: check with its owner, then remove the old key (ssh-keygen -R '%s') and try again",
			name, key.Type(), fp, w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key), name)
	}
	if !h.acceptNew {
		if h.ask == nil {
			return fmt.Errorf("%s is not in %s (its %s key is %s): run this on a terminal to check and accept the key, or pass --accept-new-host-key", name, h.file, key.Type(), fp)
		}
		q := fmt.Sprintf("The authenticity of host %s can't be established.\n%s key fingerprint is %s.\nAdd it to %s and continue?", name, key.Type(), fp, h.file)
		if !h.ask(q) {
			return fmt.Errorf("host key of %s not accepted", name)
		}
	}
	if err := os.MkdirAll(filepath.Dir(h.file), 0o700); err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	f, err := os.OpenFile(h.file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(knownhosts.Line([]string{name}, key) + "\n"); err != nil {
		return fmt.Errorf("known hosts %s: %w", h.file, err)
	}
	h.added = fp
	return nil
}
