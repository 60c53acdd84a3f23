package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/agent/hostnet"
)

type installCmd struct {
	DataDir string `help:"Data dir the service's agent uses." default:"${datadir}" placeholder:"DIR"`
	UnitDir string `help:"Where to write the unit (default: /etc/systemd/system; with --user ~/.config/systemd/user)." placeholder:"DIR"`
	NoStart bool   `help:"Write and enable the unit, but do not start it now."`
	User    bool   `help:"Write a systemd user unit (~/.config/systemd/user) for an agent run by this unprivileged user, e.g. beside rootless Docker, and enable it in the user's service manager."`

	HostNet hostNetFlags `embed:""` // cmd/uncloud/hostnet.go
	Metrics metricsFlags `embed:""` // cmd/uncloud/metricsflags.go; written into the unit's command line
}

func (installCmd) Help() string {
	return `Writes a systemd unit that runs 'uncloud agent' at boot and restarts it if it dies, enables it and starts it. Without systemd it writes the unit and says how to run the agent instead.

--expose, --socks5 and --http-proxy are saved in the data dir (hostnet.json), not in the unit, so 'uncloud expose rm' and 'uncloud proxy set' at runtime are not undone by the next restart. ` + hostNetHelp + `

With --user (as the unprivileged user, not root) the unit goes to ~/.config/systemd/user (or --unit-dir) and is enabled with systemctl --user. When this user's rootless Docker runs, the unit starts after its docker.service, restarts with it, and runs the agent with --rootless, so it never comes up outside Docker's namespaces. A user service starts at boot only when the user lingers (loginctl enable-linger USER, as root).

Examples:
  sudo uncloud install
  sudo uncloud install --expose 8080 --socks5 1080 --http-proxy 3128
  uncloud --connect $XDG_RUNTIME_DIR/uncloud.sock install --user --data-dir ~/.local/share/uncloud`
}

// systemUnitDir is where install writes the system unit (and uninstall
// and leave look for it).
const systemUnitDir = "/etc/systemd/system"

// unitText is the service: restarted on failure, stopped with SIGTERM
// (the agent shuts down cleanly on it), its state in the data dir; more
// are further agent flags (none holds a space).
func unitText(binary, dataDir string, more ...string) string {
	if len(more) > 0 {
		dataDir += " " + strings.Join(more, " ")
	}
	return fmt.Sprintf(`[Unit]
Description=uncloud agent: this machine's end of the uncloud network
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=%s agent --data-dir %s
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=20
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`, binary, dataDir)
}

func (c installCmd) Run(g *globals) error {
	if err := c.Metrics.check(); err != nil {
		return err
	}
	if c.UnitDir == "" && !c.User {
		c.UnitDir = systemUnitDir
	}
	hn, err := c.HostNet.change()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return fmt.Errorf("resolve own binary: %w", err)
	}
	if strings.Contains(self, "go-build") {
		return fmt.Errorf("%s is a temporary 'go run' binary: build it to a lasting place first (go build -o /usr/local/bin/uncloud ./cmd/uncloud)", self)
	}
	if !hn.Empty() {
		s, err := hostnet.Update(c.DataDir, hn, agent.ReservedPorts())
		if err != nil {
			return fmt.Errorf("host networking settings: %w", err)
		}
		fmt.Printf("Saved in %s: exposed %s; SOCKS5 %s; HTTP proxy %s.\n", filepath.Join(c.DataDir, hostnet.FileName),
			hostnet.FormatPorts(s.Expose), orOffText(s.SOCKS5), orOffText(s.HTTPProxy))
	}
	if c.User {
		return c.installUser(g, self)
	}
	if err := os.MkdirAll(c.UnitDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.UnitDir, err)
	}
	unit := filepath.Join(c.UnitDir, "uncloud.service")
	if err := os.WriteFile(unit, []byte(unitText(self, c.DataDir, c.Metrics.args()...)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", unit, err)
	}
	fmt.Printf("Wrote %s (runs %s).\n", unit, strings.Join(append([]string{self, "agent", "--data-dir", c.DataDir}, c.Metrics.args()...), " "))
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		fmt.Println("systemd is not running here, so nothing was enabled: start the agent with 'uncloud agent' under your supervisor.")
		return nil
	}
	steps := [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "enable", "uncloud.service"}}
	if !c.NoStart {
		steps = append(steps, []string{"systemctl", "restart", "uncloud.service"})
	}
	for _, s := range steps {
		out, err := exec.Command(s[0], s[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
		fmt.Printf("Ran %s.\n", strings.Join(s, " "))
	}
	return nil
}

func orOffText(s string) string {
	if s == "" {
		return "off"
	}
	return s
}
