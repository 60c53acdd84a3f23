package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/uncloud-mesh/uncloud/api"
)

// machine add / machine init: install uncloud on a host over SSH and make
// it a member (of the network the CLI talks to, or of a new one).

// addTokenTTL is how long the token machine add makes lives: long enough
// for a slow upload to a Pi, short enough to be worthless soon after.
const addTokenTTL = 15 * time.Minute

// remoteStepTimeout bounds one remote step; join and init wait up to 30 s
// for peers and the agent themselves.
const remoteStepTimeout = 2 * time.Minute

type remoteInstallFlags struct {
	Host             string     `arg:"" help:"[user@]host[:port], or a Host alias of ~/.ssh/config (its HostName, User, Port and IdentityFile apply)."`
	Identity         string     `short:"i" placeholder:"FILE" help:"Private key to log in with, instead of ~/.ssh/config's IdentityFile and the default keys (the ssh-agent's keys are offered too)."`
	SSHPort          uint16     `name:"ssh-port" short:"p" placeholder:"PORT" help:"SSH port; default: ~/.ssh/config's, else 22."`
	AcceptNewHostKey bool       `name:"accept-new-host-key" help:"Add a host key known_hosts does not hold yet without asking (for scripts; without a terminal an unknown host is refused otherwise). A changed key is always refused."`
	ReleaseDir       string     `name:"release-dir" placeholder:"DIR" help:"Folder with release binaries (scripts/release's dist/: uncloud-linux-ARCH and SHA256SUMS); default: this binary, when the host's architecture matches."`
	RemoteBin        string     `name:"remote-bin" default:"/usr/local/bin/uncloud" placeholder:"PATH" help:"Where the binary goes on the host."`
	RemoteDataDir    string     `name:"remote-data-dir" default:"${datadir}" placeholder:"DIR" help:"The agent's data dir on the host."`
	RemoteSocket     string     `name:"remote-socket" default:"${socket}" placeholder:"PATH" help:"The agent's API socket on the host."`
	Name             string     `help:"The new machine's name (a DNS label); default: the host's name." placeholder:"NAME"`
	PublicIP         netip.Addr `name:"public-ip" help:"An address other machines can reach the host at." placeholder:"IP"`
	Userspace        bool       `help:"Run the host's agent in the userspace netstack (no TUN or root networking needed)."`
}

type machineAddCmd struct {
	remoteInstallFlags
}

type machineInitCmd struct {
	remoteInstallFlags
}

const remoteInstallHelp = `Over SSH (golang.org/x/crypto/ssh: ~/.ssh/config's HostName, User, Port and IdentityFile, the ssh-agent, -i, -p, and ~/.ssh/known_hosts: an unknown host key is shown and asked about on a terminal, a changed one refused), it:
  checks that sudo works without a password (unless the user is root),
  detects the host's OS and architecture (uname -sm) and picks the binary: uncloud-linux-ARCH from --release-dir (checked against SHA256SUMS), or this binary when the architecture matches,
  refuses a host that is already a member of a network (data dir, socket or interface), before changing anything,
  uploads the binary over the SSH session to --remote-bin and checks its SHA-256 there,
  `

func (machineAddCmd) Help() string {
	return `Installs uncloud on a host and makes it a member of the network this CLI talks to (the local agent, --connect or a context).

` + remoteInstallHelp + `joins with a fresh single-use token (valid 15 minutes) made by the network's machine and passed on the join's stdin, never on a command line,
  writes and enables the systemd unit ('uncloud install --no-start': the agent join started keeps running; the unit takes over at the next boot); without systemd on the host it says so and leaves the agent join started.

Examples:
  uncloud machine add pi@pi.local --release-dir dist
  uncloud --context prod machine add vps-2 --public-ip 203.0.113.8`
}

func (machineInitCmd) Help() string {
	return `Installs uncloud on a host and creates a new network there, with the host as its first member ('uncloud init' on the host).

` + remoteInstallHelp + `runs 'uncloud init' there, and writes and enables the systemd unit as machine add does.

Examples:
  uncloud machine init root@203.0.113.7 --name vps-1 --public-ip 203.0.113.7`
}

func (c machineAddCmd) Run(g *globals) error {
	return c.install(g, true)
}

func (c machineInitCmd) Run(g *globals) error {
	return c.install(g, false)
}

// stepf prints one finished step: ✓ done, - nothing to do, ✗ failed.
func stepf(mark, what, format string, args ...any) {
	fmt.Printf("%s %s: %s\n", mark, what, fmt.Sprintf(format, args...))
}

// install is machine add (join) and machine init: the same steps but for
// the token and the command that makes the host a member.
func (c remoteInstallFlags) install(g *globals, join bool) (err error) {
	start := time.Now()
	// Ctrl-C ends the remote command (its session closes) and still
	// revokes an unused token.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	verb := "machine init"
	if join {
		verb = "machine add"
	}
	failed := ""
	state := "nothing was changed on " + c.Host
	defer func() {
		if err == nil {
			return
		}
		stepf("✗", failed, "%v", err)
		err = fmt.Errorf("%s %s failed at %s (%s)", verb, c.Host, failed, state)
	}()

	// The network side first: without it nothing on the host is touched.
	var network *api.Client
	var netStatus api.Status
	if join {
		failed = "network"
		if network, err = g.client(); err != nil {
			return err
		}
		defer network.Close()
		cctx, cancel := context.WithTimeout(ctx, shortCommand)
		netStatus, err = network.Status(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ask the agent this CLI talks to: %w", err)
		}
		stepf("✓", "network", "%s, through machine %s", netStatus.NetworkID, netStatus.Name)
	}

	failed = "ssh"
	r, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer r.client.Close()

	failed = "sudo"
	if err := r.checkSudo(ctx); err != nil {
		return err
	}

	failed = "architecture"
	out, err := r.runStep(ctx, "uname -sm", nil)
	if err != nil {
		return err
	}
	goarch, err := goArch(strings.TrimSpace(out))
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	bin, err := pickBinary(goarch, c.ReleaseDir, self, selfArch())
	if err != nil {
		return err
	}
	stepf("✓", "architecture", "%s: linux/%s, uploading %s", strings.TrimSpace(out), goarch, bin.Path)

	failed = "membership"
	if err := c.checkNotMember(ctx, r, netStatus.NetworkID); err != nil {
		return err
	}

	var token api.TokenInfo
	if join {
		failed = "token"
		cctx, cancel := context.WithTimeout(ctx, shortCommand)
		token, err = network.CreateToken(cctx, api.TokenRequest{TTL: addTokenTTL, Uses: 1})
		cancel()
		if err != nil {
			return fmt.Errorf("make a join token on %s: %w", netStatus.Name, err)
		}
		defer func() {
			if err != nil {
				// Unused (or used by a join whose later steps failed): revoked
				// rather than left valid for its 15 minutes.
				cctx, cancel := context.WithTimeout(context.Background(), shortCommand)
				network.RevokeToken(cctx, token.ID)
				cancel()
			}
		}()
		stepf("✓", "token", "%s made on %s: single-use, valid until %s", token.ID, netStatus.Name, token.Expires.Local().Format(time.TimeOnly))
	}

	failed = "upload"
	state = fmt.Sprintf("%s may keep the binary at %s", c.Host, c.RemoteBin)
	if err := c.upload(ctx, r, bin); err != nil {
		return err
	}

	remote := []string{c.RemoteBin, "--connect", c.RemoteSocket}
	var member []string
	var stdin io.Reader
	if join {
		failed = "join"
		member = append(remote, "join", "-", "--data-dir", c.RemoteDataDir)
		stdin = strings.NewReader(token.Token + "\n")
	} else {
		failed = "init"
		member = append(remote, "init", "--data-dir", c.RemoteDataDir)
	}
	if c.Name != "" {
		member = append(member, "--name", c.Name)
	}
	if c.PublicIP.IsValid() {
		member = append(member, "--public-ip", c.PublicIP.String())
	}
	if c.Userspace {
		member = append(member, "--userspace")
	}
	fmt.Printf("… %s: running uncloud %s\n", failed, strings.Join(member[3:], " "))
	state = fmt.Sprintf("see '%s status' and %s/agent.log on %s", c.RemoteBin, c.RemoteDataDir, c.Host)
	memberOut, err := r.runStep(ctx, r.sudo+shellJoin(member...), stdin)
	for _, l := range strings.Split(strings.TrimSpace(memberOut), "\n") {
		if l != "" {
			fmt.Println("    " + l)
		}
	}
	if err != nil {
		return err
	}
	stepf("✓", failed, "the agent runs on %s", c.Host)

	failed = "systemd"
	if err := c.installUnit(ctx, r); err != nil {
		return err
	}

	failed = "status"
	out, err = r.runStep(ctx, r.sudo+shellJoin(c.RemoteBin, "--connect", c.RemoteSocket, "status", "-o", "json"), nil)
	if err != nil {
		return err
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("read the host's status: %w", err)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	if join {
		fmt.Printf("Machine %s joined network %s: %s on the mesh (%v).\n", st.Name, st.NetworkID, st.Address, took)
	} else {
		fmt.Printf("Machine %s created network %s: %s on the mesh (%v).\n", st.Name, st.NetworkID, st.Address, took)
	}
	return nil
}

// connect logs in to the host, asking about an unknown host key on a
// terminal.
func (c remoteInstallFlags) connect(ctx context.Context) (*remoteHost, error) {
	target, err := sshTargetURL(c.Host, c.SSHPort)
	if err != nil {
		return nil, err
	}
	home, _ := os.UserHomeDir()
	hk := &hostKeys{file: filepath.Join(home, ".ssh", "known_hosts"), acceptNew: c.AcceptNewHostKey}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		hk.ask = func(q string) bool {
			return confirm(false, q, "") == nil
		}
	}
	var opts api.SSHOptions
	if c.Identity != "" {
		opts.IdentityFiles = []string{c.Identity}
	}
	var offered ssh.PublicKey
	check := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		offered = key
		return hk.check(hostname, remote, key)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client, resolved, err := api.DialSSH(dctx, api.SSHHost{Target: target, Options: opts, HostKey: check, HostKeyAlgorithms: hk.algorithms})
	if err != nil {
		return nil, err
	}
	how := "known"
	if hk.added != "" {
		how = "new, added to " + hk.file
	}
	stepf("✓", "ssh", "logged in to %s@%s port %s (%s host key %s, %s)", resolved.User, resolved.HostName, resolved.Port,
		offered.Type(), ssh.FingerprintSHA256(offered), how)
	r := &remoteHost{client: client, target: resolved}
	if resolved.User != "root" {
		r.sudo = "sudo -n "
	}
	return r, nil
}

// runStep is run bounded by remoteStepTimeout.
func (r *remoteHost) runStep(ctx context.Context, cmd string, stdin io.Reader) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteStepTimeout)
	defer cancel()
	return r.run(ctx, cmd, stdin)
}

func (r *remoteHost) checkSudo(ctx context.Context) error {
	if r.sudo == "" {
		stepf("✓", "sudo", "not needed: logged in as root")
		return nil
	}
	out, err := r.runStep(ctx, "sudo -n true", nil)
	if err != nil {
		if strings.Contains(out+err.Error(), "password") {
			return fmt.Errorf("%s needs a password for sudo on %s, which this command cannot type: give %s passwordless sudo (a NOPASSWD rule in /etc/sudoers.d) or log in as root", r.target.User, r.target.HostName, r.target.User)
		}
		return fmt.Errorf("sudo -n true as %s: %w", r.target.User, err)
	}
	stepf("✓", "sudo", "%s may run commands as root without a password", r.target.User)
	return nil
}

// checkNotMember refuses a host with an uncloud data dir, socket or
// interface: a member of this network or another. It only looks.
func (c remoteInstallFlags) checkNotMember(ctx context.Context, r *remoteHost, networkID string) error {
	script := fmt.Sprintf(`d=%s; s=%s
[ -e "$d" ] && echo "data dir $d"
[ -S "$s" ] && echo "agent socket $s"
[ -e /sys/class/net/uncloud ] && echo "interface uncloud"
true`, shellQuote(filepath.Join(c.RemoteDataDir, "machine.json")), shellQuote(c.RemoteSocket))
	out, err := r.runStep(ctx, r.sudo+"sh -c "+shellQuote(script), nil)
	if err != nil {
		return err
	}
	found := strings.Split(strings.TrimSpace(out), "\n")
	if strings.TrimSpace(out) == "" {
		stepf("✓", "membership", "%s is in no network (no %s, no socket %s, no uncloud interface)", c.Host, c.RemoteDataDir+"/machine.json", c.RemoteSocket)
		return nil
	}
	what := strings.Join(found, ", ")
	// A running agent says which network; the binary may be absent.
	st, serr := r.runStep(ctx, r.sudo+shellJoin(c.RemoteBin, "--connect", c.RemoteSocket, "status", "-o", "json"), nil)
	var s api.Status
	if serr == nil && json.Unmarshal([]byte(st), &s) == nil && s.NetworkID != "" {
		which := "another network, " + s.NetworkID
		if s.NetworkID == networkID {
			which = "this network"
		}
		return fmt.Errorf("%s is already machine %q of %s (it has %s): refusing to change it", c.Host, s.Name, which, what)
	}
	return fmt.Errorf("%s already belongs to a network (it has %s): refusing to change it; 'uncloud uninstall --purge' there starts it over", c.Host, what)
}

// upload copies bin to the host over the session's stdin and installs
// it at RemoteBin, checking its SHA-256 there; a binary already there
// with the same hash is kept.
func (c remoteInstallFlags) upload(ctx context.Context, r *remoteHost, bin localBinary) error {
	have, _ := r.runStep(ctx, "sha256sum "+shellQuote(c.RemoteBin)+" 2>/dev/null || true", nil)
	if f := strings.Fields(have); len(f) > 0 && f[0] == bin.SHA256 {
		stepf("✓", "upload", "%s already holds this binary (SHA-256 %s…)", c.RemoteBin, bin.SHA256[:16])
		return nil
	}
	f, err := os.Open(bin.Path)
	if err != nil {
		return fmt.Errorf("open %s: %w", bin.Path, err)
	}
	defer f.Close()
	script := fmt.Sprintf(`set -e
t=$(mktemp "${TMPDIR:-/tmp}/uncloud.XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
s=$(sha256sum "$t" | cut -d' ' -f1)
[ "$s" = %[1]s ] || { echo "the upload arrived with SHA-256 $s, not %[1]s" >&2; exit 1; }
%[2]sinstall -D -m 0755 "$t" %[3]s
sha256sum %[3]s`, bin.SHA256, r.sudo, shellQuote(c.RemoteBin))
	uctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a Pi on Wi-Fi
	defer cancel()
	out, err := r.run(uctx, "sh -c "+shellQuote(script), f)
	if err != nil {
		return err
	}
	if got := strings.Fields(out); len(got) == 0 || got[0] != bin.SHA256 {
		return fmt.Errorf("%s on the host has SHA-256 %q after install, want %s", c.RemoteBin, out, bin.SHA256)
	}
	stepf("✓", "upload", "%s, %.1f MiB, SHA-256 %s… checked on the host", c.RemoteBin, float64(bin.Size)/(1<<20), bin.SHA256[:16])
	return nil
}

// installUnit runs 'uncloud install --no-start' on a host with systemd;
// the agent join or init started keeps running until the next boot.
func (c remoteInstallFlags) installUnit(ctx context.Context, r *remoteHost) error {
	if _, err := r.runStep(ctx, "test -d /run/systemd/system", nil); err != nil {
		var exit *ssh.ExitError
		if !errors.As(err, &exit) {
			return err
		}
		stepf("-", "systemd", "not running on %s: no unit written; the agent started above runs until the host restarts (run '%s agent --data-dir %s' under your supervisor)",
			c.Host, c.RemoteBin, c.RemoteDataDir)
		return nil
	}
	if _, err := r.runStep(ctx, r.sudo+shellJoin(c.RemoteBin, "install", "--no-start", "--data-dir", c.RemoteDataDir), nil); err != nil {
		return err
	}
	stepf("✓", "systemd", "uncloud.service written and enabled (it takes over from the running agent at the next boot)")
	return nil
}
