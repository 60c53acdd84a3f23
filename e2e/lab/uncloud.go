package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// AgentConfig is the static config file of `uncloud agent --config`.
type AgentConfig struct {
	PrivateKey tun.Key
	Address    netip.Addr // X.1 in the /24 the machine owns
	ListenPort int        // 0 means leave it out (the agent's default)
	Extra      []string   // more [Interface] lines, e.g. "MTU = 1380"
	Peers      []PeerConfig
}

// PeerConfig is one [Peer] section.
type PeerConfig struct {
	PublicKey           tun.Key
	Endpoint            netip.AddrPort // zero: no endpoint (the peer calls us)
	AllowedIPs          []netip.Prefix
	PersistentKeepalive int // seconds, 0 leaves it out
}

// Render writes the config in the agent's wg-quick-like format.
func (c AgentConfig) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = %s\n", c.PrivateKey, c.Address)
	if c.ListenPort != 0 {
		fmt.Fprintf(&b, "ListenPort = %d\n", c.ListenPort)
	}
	for _, l := range c.Extra {
		b.WriteString(l + "\n")
	}
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\n", p.PublicKey)
		if p.Endpoint.IsValid() {
			fmt.Fprintf(&b, "Endpoint = %s\n", p.Endpoint)
		}
		if len(p.AllowedIPs) > 0 {
			ips := make([]string, len(p.AllowedIPs))
			for i, a := range p.AllowedIPs {
				ips[i] = a.String()
			}
			fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(ips, ", "))
		}
		if p.PersistentKeepalive > 0 {
			fmt.Fprintf(&b, "PersistentKeepalive = %d\n", p.PersistentKeepalive)
		}
	}
	return b.String()
}

// AgentOptions are the agent's command-line flags.
type AgentOptions struct {
	Userspace bool           // --userspace: force netstack
	Expose    []string       // --expose PORT[/udp]
	SOCKS5    netip.AddrPort // --socks5 (netstack hosts reach the mesh through it)
	LogLevel  string         // --log-level; empty means debug, the most useful after a failure
	Args      []string       // anything else
}

func (o AgentOptions) args() []string {
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	args := []string{"--log-level", level}
	if o.Userspace {
		args = append(args, "--userspace")
	}
	for _, e := range o.Expose {
		args = append(args, "--expose", e)
	}
	if o.SOCKS5.IsValid() {
		args = append(args, "--socks5", o.SOCKS5.String())
	}
	return append(args, o.Args...)
}

// Agent is an `uncloud agent` running on a host.
type Agent struct {
	Host       *Host
	Config     AgentConfig
	Options    AgentOptions
	ConfigPath string
	StateDir   string // seen as /var/lib/uncloud by the agent
	Proc       *Process
	Mode       string // "kernel" or "netstack", from the "mesh up" line
}

// UpTimeout bounds how long StartAgent waits for "mesh up".
const UpTimeout = 30 * time.Second

var modeRE = regexp.MustCompile(`msg="?mesh up"?.*\bmode=(\w+)`)

// StartAgent writes cfg to the host's directory (mode 0600: it holds a
// private key) and runs `uncloud agent` with it, waiting for the log line
// saying the mesh is up. The agent runs until Stop, Kill or the lab closes.
func (h *Host) StartAgent(ctx context.Context, cfg AgentConfig, opts AgentOptions) (*Agent, error) {
	bin := h.lab.Uncloud
	if bin == "" {
		var err error
		if bin, err = UncloudBinary(); err != nil {
			return nil, fmt.Errorf("start agent on %s: %w", h.Name, err)
		}
	}
	a := &Agent{Host: h, Config: cfg, Options: opts,
		ConfigPath: filepath.Join(h.Dir, "uncloud.conf"),
		StateDir:   h.privateSources()[1], // /var/lib/uncloud inside the host
	}
	if err := os.MkdirAll(a.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("start agent on %s: %w", h.Name, err)
	}
	if err := a.WriteConfig(cfg); err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", h.argv(bin, append([]string{"agent", "--config", a.ConfigPath}, opts.args()...)...)...)
	// Its own state directory as working directory and HOME too, so nothing
	// the agent writes lands in another host's (or the developer's) files.
	cmd.Dir = a.StateDir
	cmd.Env = append(os.Environ(), "HOME="+a.StateDir)
	p, err := h.startCmd("uncloud", cmd)
	if err != nil {
		return nil, err
	}
	a.Proc = p
	upCtx, cancel := context.WithTimeout(ctx, UpTimeout)
	defer cancel()
	if _, err := p.WaitLog(upCtx, 0, "mesh up"); err != nil {
		return a, fmt.Errorf("agent on %s: %w", h.Name, err)
	}
	if m := modeRE.FindStringSubmatch(p.Log()); m != nil {
		a.Mode = m[1]
	}
	return a, nil
}

// WriteConfig (re)writes the agent's config file.
func (a *Agent) WriteConfig(cfg AgentConfig) error {
	if err := os.WriteFile(a.ConfigPath, []byte(cfg.Render()), 0o600); err != nil {
		return fmt.Errorf("write config for %s: %w", a.Host.Name, err)
	}
	a.Config = cfg
	return nil
}

// Reload writes cfg and sends SIGHUP, then waits for the agent to log that
// it applied it ("config reloaded") or refused it ("config not reloaded").
func (a *Agent) Reload(ctx context.Context, cfg AgentConfig) error {
	if err := a.WriteConfig(cfg); err != nil {
		return err
	}
	from := a.Proc.LogLen()
	if err := a.Proc.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	said, end, err := a.Proc.WaitLogAny(ctx, from, "config reloaded", "config not reloaded")
	if err != nil {
		return fmt.Errorf("reload agent on %s: %w", a.Host.Name, err)
	}
	if said == "config not reloaded" {
		log := a.Proc.Log()
		line := log[from:end]
		if i := strings.IndexByte(log[end:], '\n'); i >= 0 {
			line = log[from : end+i]
		}
		return fmt.Errorf("agent on %s refused the new config: %s", a.Host.Name, lastLogLine(line))
	}
	return nil
}

func lastLogLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// MeshAddr is the agent's mesh address.
func (a *Agent) MeshAddr() netip.Addr { return a.Config.Address }

// Endpoint is where peers reach this agent's WireGuard port.
func (a *Agent) Endpoint() netip.AddrPort {
	port := a.Config.ListenPort
	if port == 0 {
		port = DefaultListenPort
	}
	return netip.AddrPortFrom(a.Host.PublicAddr, uint16(port))
}

// DefaultListenPort is the agent's WireGuard port when the config has none.
const DefaultListenPort = 51820

// Stop sends SIGTERM and waits for a clean exit (it is an error if the
// agent exits non-zero or is still running after 10 s).
func (a *Agent) Stop(ctx context.Context) error { return a.StopWith(ctx, syscall.SIGTERM) }

// StopWith is Stop with another signal, e.g. SIGINT.
func (a *Agent) StopWith(ctx context.Context, sig syscall.Signal) error {
	if err := a.Proc.Signal(sig); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Proc.Wait(ctx); err != nil {
		return fmt.Errorf("agent on %s after %v: %w", a.Host.Name, sig, err)
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (a *Agent) Kill(ctx context.Context) error {
	if err := a.Proc.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	err := a.Proc.Wait(ctx)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return fmt.Errorf("agent on %s after SIGKILL: %w", a.Host.Name, err)
	}
	return nil
}
