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
	UnitDir string `help:"Where to write the unit." default:"/etc/systemd/system" placeholder:"DIR"`
	NoStart bool   `help:"Write and enable the unit, but do not start it now."`

	HostNet hostNetFlags `embed:""` // cmd/uncloud/hostnet.go
}

func (installCmd) Help() string {
	return `Writes a systemd unit that runs 'uncloud agent' at boot and restarts it if it dies, enables it and starts it. Without systemd it writes the unit and says how to run the agent instead.

--expose, --socks5 and --http-proxy are saved in the data dir (hostnet.json), not in the unit, so 'uncloud expose rm' and 'uncloud proxy set' at runtime are not undone by the next restart. ` + hostNetHelp + `

Examples:
  sudo uncloud install
  sudo uncloud install --expose 8080 --socks5 1080 --http-proxy 3128`
}

// unitText is the service: restarted on failure, stopped with SIGTERM
// (the agent shuts down cleanly on it), its state in the data dir.
func unitText(binary, dataDir string) string {
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
	if err := os.MkdirAll(c.UnitDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.UnitDir, err)
	}
	unit := filepath.Join(c.UnitDir, "uncloud.service")
	if err := os.WriteFile(unit, []byte(unitText(self, c.DataDir)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", unit, err)
	}
	fmt.Printf("Wrote %s (runs %s agent --data-dir %s).\n", unit, self, c.DataDir)
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
