package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/uncloud-mesh/uncloud/agent/rootless"
)

// userUnitDir is where a user's systemd manager reads units it was not
// given elsewhere: $XDG_CONFIG_HOME/systemd/user, ~/.config/systemd/user.
func userUnitDir() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "systemd", "user"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the user unit dir: %w", err)
	}
	return filepath.Join(home, ".config", "systemd", "user"), nil
}

// userUnitText is the user service. With rootlessDocker it is ordered
// after the user's docker.service and restarted with it (PartOf), since
// the agent lives in that engine's namespaces; and --rootless makes a
// start before the engine answers fail (and be retried) instead of coming
// up in netstack mode outside them.
func userUnitText(binary string, args []string, rootlessDocker bool) string {
	order := "After=network-online.target\n"
	if rootlessDocker {
		order = "Wants=docker.service\nAfter=network-online.target docker.service\nPartOf=docker.service\n"
		args = append(args, "--rootless")
	}
	return fmt.Sprintf(`[Unit]
Description=uncloud agent: this machine's end of the uncloud network (as this user)
%s
[Service]
ExecStart=%s %s
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=20

[Install]
WantedBy=default.target
`, order, binary, strings.Join(args, " "))
}

// installUser writes the user unit and enables it where the user's
// service manager runs, else says how to start it.
func (c installCmd) installUser(g *globals, self string) error {
	if os.Geteuid() == 0 {
		return errors.New("--user installs a service of an unprivileged user, in that user's own service manager: run it as that user (as root, 'uncloud install' writes the system unit)")
	}
	if c.UnitDir == "" {
		d, err := userUnitDir()
		if err != nil {
			return err
		}
		c.UnitDir = d
	}
	args := []string{}
	if sock := socketPath(g.Connect); sock != socketPath("") {
		args = append(args, "--connect", sock)
	}
	args = append(args, "agent", "--data-dir", c.DataDir)
	args = append(args, c.Metrics.args()...)
	_, err := rootless.System{Root: "/"}.Find(os.Getenv("DOCKER_HOST"), os.Getuid(), os.Getenv("XDG_RUNTIME_DIR"))
	rootlessDocker := err == nil
	if rootlessDocker {
		fmt.Println("This user's rootless Docker runs: the agent will run inside its namespaces (rootless mode), after docker.service.")
	}
	if err := os.MkdirAll(c.UnitDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.UnitDir, err)
	}
	unit := filepath.Join(c.UnitDir, "uncloud.service")
	if err := os.WriteFile(unit, []byte(userUnitText(self, args, rootlessDocker)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", unit, err)
	}
	fmt.Printf("Wrote %s.\n", unit)
	if !userManagerRunning() {
		fmt.Println("No systemd user manager answers for this user (no login session, or XDG_RUNTIME_DIR unset), so nothing was enabled. " +
			"Log in (or as root: loginctl enable-linger " + userName() + "), then: systemctl --user daemon-reload && systemctl --user enable --now uncloud.service")
		return nil
	}
	steps := [][]string{{"systemctl", "--user", "daemon-reload"}, {"systemctl", "--user", "enable", "uncloud.service"}}
	if !c.NoStart {
		steps = append(steps, []string{"systemctl", "--user", "restart", "uncloud.service"})
	}
	for _, s := range steps {
		out, err := exec.Command(s[0], s[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
		fmt.Printf("Ran %s.\n", strings.Join(s, " "))
	}
	fmt.Println("It starts at boot only while the user lingers: as root, loginctl enable-linger " + userName() + ".")
	return nil
}

// userManagerRunning says whether systemctl --user reaches this user's
// systemd.
func userManagerRunning() bool {
	return exec.Command("systemctl", "--user", "show-environment").Run() == nil
}

func userName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return fmt.Sprint(os.Getuid())
}
