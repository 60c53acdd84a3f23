package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHOptions says where the SSH client finds keys, known hosts and its
// config. The zero value uses the user's ~/.ssh and $SSH_AUTH_SOCK, as
// ssh(1) would.
type SSHOptions struct {
	KnownHostsFile string   // default ~/.ssh/known_hosts
	IdentityFiles  []string // default: the config's IdentityFile, else ~/.ssh/id_ed25519, id_ecdsa, id_rsa
	AgentSocket    string   // default $SSH_AUTH_SOCK
	// ConfigFile is read for the target's Host block: HostName, User,
	// Port and IdentityFile (default ~/.ssh/config; "none" reads none).
	ConfigFile string
}

// sshTunnel is one SSH connection per CLI run; each API connection is a
// direct-streamlocal channel to the agent's socket on the far side, so the
// far side needs only sshd and the socket, no open port.
type sshTunnel struct {
	addr, socket string
	config       *ssh.ClientConfig

	mu     sync.Mutex
	client *ssh.Client
}

func newSSHTunnel(u *url.URL, opts SSHOptions) (*sshTunnel, error) {
	home, _ := os.UserHomeDir()
	r, err := resolveSSH(u, opts.ConfigFile, home)
	if err != nil {
		return nil, err
	}
	if opts.IdentityFiles == nil {
		opts.IdentityFiles = r.IdentityFiles // nil: the default keys
	}
	socket := u.Path
	if socket == "" || socket == "/" {
		socket = DefaultSocket
	}
	if opts.KnownHostsFile == "" {
		opts.KnownHostsFile = filepath.Join(home, ".ssh", "known_hosts")
	}
	hostKeys, err := knownhosts.New(opts.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("ssh: read known hosts %s (connect once with ssh(1) to add the host): %w", opts.KnownHostsFile, err)
	}
	auth, err := sshAuthMethods(opts, home)
	if err != nil {
		return nil, err
	}
	return &sshTunnel{
		addr:   net.JoinHostPort(r.HostName, r.Port),
		socket: socket,
		config: &ssh.ClientConfig{
			User:            r.User,
			Auth:            auth,
			HostKeyCallback: hostKeys,
			Timeout:         10 * time.Second,
		},
	}, nil
}

func sshAuthMethods(opts SSHOptions, home string) ([]ssh.AuthMethod, error) {
	var methods []ssh.AuthMethod
	sock := opts.AgentSocket
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		if c, err := net.Dial("unix", sock); err == nil {
			methods = append(methods, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
		}
	}
	files := opts.IdentityFiles
	if files == nil {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			files = append(files, filepath.Join(home, ".ssh", name))
		}
	}
	var signers []ssh.Signer
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			// A passphrase-protected key needs the agent; say so only if
			// nothing else works (below).
			continue
		}
		signers = append(signers, signer)
	}
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	if len(methods) == 0 {
		return nil, errors.New("ssh: no usable key: start ssh-agent with your key, or put an unencrypted key in ~/.ssh")
	}
	return methods, nil
}

func (t *sshTunnel) connect(ctx context.Context) (*ssh.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		return t.client, nil
	}
	c, err := dialSSH(ctx, t.addr, t.config)
	if err != nil {
		return nil, err
	}
	t.client = c
	return t.client, nil
}

func (t *sshTunnel) dial(ctx context.Context) (net.Conn, error) {
	client, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := client.Dial("unix", t.socket)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: open agent socket %s on the far side: %w", t.addr, t.socket, err)
	}
	return conn, nil
}

func (t *sshTunnel) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client == nil {
		return nil
	}
	err := t.client.Close()
	t.client = nil
	return err
}
