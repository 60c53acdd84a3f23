package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
)

// enterUser prepares uninstall --user: the user unit's dir, and, when the
// user's rootless Docker runs, this process moved into its namespaces
// (where the agent's containers, rules, interface and routes are, and
// where it may remove them). hostOnly says it runs outside them: no
// rootless Docker runs, so only the agent, the unit, the socket and the
// data dir are this user's to remove here.
func (c *uninstallCmd) enterUser(g *globals) (hostOnly bool, err error) {
	pid, err := enterRootless(g.Logger, false, false, c.DockerHost, os.Args[1:], 0, nil)
	if err != nil {
		return false, err
	}
	if pid == 0 && os.Geteuid() == 0 {
		return false, errors.New("--user undoes an unprivileged user's agent: run it as that user (as root, 'uncloud uninstall' removes the system's)")
	}
	if c.UnitDir == "" {
		if c.UnitDir, err = userUnitDir(); err != nil {
			return false, err
		}
	}
	if pid == 0 {
		fmt.Println("No rootless Docker runs for this user: whatever the agent made inside its namespaces went with them.")
	}
	return pid == 0, nil
}

// userHostSteps are the steps an unprivileged user can take outside any
// namespace of their own.
func userHostSteps(steps []cleanupStep) []cleanupStep {
	return slices.DeleteFunc(steps, func(s cleanupStep) bool {
		return !slices.Contains([]string{"agent", "systemd unit", "socket", "data dir", "data"}, s.what)
	})
}

func (c uninstallCmd) systemctl(args ...string) error {
	if c.User {
		args = append([]string{"--user"}, args...)
	}
	return systemctl(args...)
}

// managerRunning says whether the service manager of the unit (the
// system's, or with --user the user's) answers.
func (c uninstallCmd) managerRunning() bool {
	if c.User {
		return userManagerRunning()
	}
	return systemdRunning()
}

func (c uninstallCmd) unitActive() bool {
	args := []string{"is-active", "--quiet", "uncloud.service"}
	if c.User {
		args = append([]string{"--user"}, args...)
	}
	return exec.Command("systemctl", args...).Run() == nil
}
