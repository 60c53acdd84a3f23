package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/internal/testkit/sshd"
)

// sshdServer is a real OpenSSH sshd (internal/testkit/sshd) on loopback
// that lets root in with userKey and forwards to unix sockets, as
// `--connect ssh://` needs.
type sshdServer struct {
	dir              string
	port             int
	hostKey, userKey ssh.PublicKey
	opts             SSHOptions // the client's: known hosts and key
	logs             interface{ String() string }
}

// target is the --connect target of a socket behind the sshd.
func (d *sshdServer) target(sock string) string {
	return fmt.Sprintf("ssh://root@127.0.0.1:%d%s", d.port, sock)
}

type logsOf struct{ s *sshd.Server }

func (l logsOf) String() string { return l.s.Logs() }

func startSSHD(t *testing.T) *sshdServer {
	t.Helper()
	sshd.Binary(t)
	dir := t.TempDir()
	userKey := sshd.WriteKey(t, filepath.Join(dir, "user_ed25519"))
	s := sshd.Start(t, sshd.Options{Dir: dir, AuthorizedKeys: []ssh.PublicKey{userKey}})
	known := filepath.Join(dir, "known_hosts")
	os.WriteFile(known, []byte(s.KnownHostsLine()), 0o600)
	opts := SSHOptions{KnownHostsFile: known, IdentityFiles: []string{filepath.Join(dir, "user_ed25519")}, AgentSocket: "/nonexistent"}
	return &sshdServer{dir: s.Dir, port: s.Port, hostKey: s.HostKey, userKey: userKey, opts: opts, logs: logsOf{s}}
}

// TestClientOverSSH reaches an agent socket through a real OpenSSH sshd
// (Debian's openssh-server) on loopback, as `--connect ssh://` does.
func TestClientOverSSH(t *testing.T) {
	d := startSSHD(t)
	dir, port, userKey, opts, logs := d.dir, d.port, d.userKey, d.opts, d.logs
	sock := filepath.Join(dir, "agent.sock")
	ln, err := ListenUnix(context.Background(), sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "agent says hi") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	known := opts.KnownHostsFile
	target := d.target(sock)
	c, err := NewClient(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.HTTP.Get(c.BaseURL + "/")
	if err != nil {
		t.Fatalf("GET through ssh: %v\nsshd log:\n%s", err, logs.String())
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "agent says hi" {
		t.Fatalf("got %q", b)
	}

	// A host whose key is not in known_hosts is refused: no trust on first use.
	os.WriteFile(known, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(userKey))), 0o600)
	c2, err := NewClient(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.HTTP.Get(c2.BaseURL + "/"); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Fatalf("wrong host key: error = %v, want a key mismatch", err)
	}
}

// TestExecOverSSH: the exec stream through `--connect ssh://` (an SSH
// channel to the agent's socket, relayed on to a machine): input, resize
// and exit code; and a CLI whose SSH connection drops ends the command on
// the machine.
func TestExecOverSSH(t *testing.T) {
	d := startSSHD(t)
	m := &machineServer{}
	msrv := httptest.NewServer(m.handler())
	t.Cleanup(msrv.Close)
	a := &execAgent{machine: NewMachineClient(msrv.Client(), func(string) (string, error) { return msrv.URL, nil })}
	sock := filepath.Join(d.dir, "agent.sock")
	ln, err := ListenUnix(context.Background(), sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewLocalHandler(a)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c, err := NewClient(d.target(sock), d.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, target, err := c.ExecAttach(ctx, "web", ExecRequest{Cmd: []string{"sh"}, ExecOptions: ExecOptions{TTY: true, Stdin: true}})
	if err != nil {
		t.Fatalf("attach over ssh: %v\nsshd log:\n%s", err, d.logs)
	}
	if target.Machine != "m2" {
		t.Errorf("target %+v", target)
	}
	var got collect
	done := make(chan error, 1)
	go func() { done <- s.Output(got.out) }()
	s.Input([]byte("over ssh"))
	waitFor(t, "the echo over ssh", func() bool { return got.get(1) == "echo: over ssh" })
	s.Resize(ctx, 90, 30)
	waitFor(t, "the resize over ssh", func() bool { return got.get(2) == "size 90x30" })
	s.Input([]byte("exit 9"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code, err := s.Wait(ctx); code != 9 || err != nil {
		t.Fatalf("exit code %d %v, want 9", code, err)
	}
	s.Close()

	// The whole SSH connection drops (the laptop's Wi-Fi, say).
	s, _, err = c.ExecAttach(ctx, "web", ExecRequest{Cmd: []string{"sh"}, ExecOptions: ExecOptions{Stdin: true}})
	if err != nil {
		t.Fatal(err)
	}
	got = collect{}
	go s.Output(got.out)
	s.Input([]byte("x"))
	waitFor(t, "the echo", func() bool { return got.get(1) == "echo: x" })
	c.Close()
	ms, _ := m.last()
	waitFor(t, "the command to end after the SSH connection dropped", ms.isClosed)
}
