package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/agent"
)

// The agent's side of an upgrade, as a process: once the daemon has a
// checked binary (agent.Daemon.Upgrades), it stops cleanly, the binary is
// renamed over the installed one (the old one kept as <bin>.previous) and
// the process re-executes itself on it.
//
// Re-exec rather than exit-and-let-systemd-restart: the process keeps its
// PID, so it works the same under the systemd unit (its main PID does not
// change), under another supervisor, under `init --foreground` in a
// container, and in the lab; there is no RestartSec wait nor a start-limit
// count; and the new process inherits the environment that carries the
// rollback marks below. Containers are not touched: dockerd owns them, and
// the daemon's stop path closes its Docker client only. The fail-closed
// route and the firewall chains stay across the restart, as across any
// stop.
//
// Rollback: the new process gets envPrevious naming the old binary. If it
// fails to start, or is not alive and rejoined (sees as many members as
// the old process did) within upgradeDeadline, it renames the old binary
// back and re-executes that, with envFailed saying why; the restored agent
// reports it (machine upgrade status), and `machine upgrade` names it.
const (
	envPrevious = "UNCLOUD_UPGRADE_PREVIOUS"  // the old binary, kept beside the new one
	envPeers    = "UNCLOUD_UPGRADE_PEERS"     // members the old process saw alive
	envFailed   = "UNCLOUD_UPGRADE_FAILED"    // why the restored binary runs again
	envSockets  = "UNCLOUD_UPGRADE_LISTENERS" // the ingress's sockets (agent.Handover)

	// upgradeDeadline bounds a new binary's start and rejoin.
	upgradeDeadline = 60 * time.Second
)

// failStartup is fault injection for the upgrade tests: a binary built
// with -ldflags "-X main.failStartup=WHY" fails every agent start with WHY
// (its `version` still runs, so it passes the upload's checks). Release
// builds never set it.
var failStartup string

// upgradeMarks are what the previous process left in the environment.
type upgradeMarks struct {
	previous string // set: this process is a new binary on probation
	peers    int
	failed   string // set: this process is a restored binary
	sockets  string // agent.NewHandover's spec
}

// takeUpgradeMarks reads the marks and removes them from the
// environment, so no later exec inherits them by mistake.
func takeUpgradeMarks() upgradeMarks {
	m := upgradeMarks{previous: os.Getenv(envPrevious), failed: os.Getenv(envFailed), sockets: os.Getenv(envSockets)}
	m.peers, _ = strconv.Atoi(os.Getenv(envPeers))
	for _, k := range []string{envPrevious, envPeers, envFailed, envSockets} {
		os.Unsetenv(k)
	}
	return m
}

// installedBinary is this process's binary, symlinks resolved, or ""
// when it is a `go run` temporary that an upgrade must not replace.
func installedBinary() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	if self, err = filepath.EvalSymlinks(self); err != nil || strings.Contains(self, "go-build") {
		return ""
	}
	return self
}

// watchRejoin reports on the returned channel when d does not see peers
// other members alive before deadline; it closes it once it does.
func watchRejoin(ctx context.Context, log *slog.Logger, d *agent.Daemon, peers int, deadline time.Time) <-chan string {
	out := make(chan string, 1)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			n := d.AliveMembers()
			if n >= peers {
				log.Info("upgrade confirmed: this version is up and sees the other members", "version", version, "alive", n)
				close(out)
				return
			}
			if time.Now().After(deadline) {
				out <- fmt.Sprintf("version %s saw %d of the %d members alive before it within %v", version, n, peers, upgradeDeadline)
				return
			}
			select {
			case <-ctx.Done():
				close(out)
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// restartOn puts the checked binary next in place of installed, keeping
// the old one as installed.previous, and re-executes it with argv. It
// returns only if that fails; then the old binary is executed again.
func restartOn(log *slog.Logger, next, installed string, argv []string, peers int, sockets string) error {
	previous := installed + ".previous"
	swap := func() error {
		if err := os.Remove(previous); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove the older %s: %w", previous, err)
		}
		// A hard link keeps the running binary as .previous while the
		// rename replaces the installed name in one step: there is no
		// moment without a binary at that path.
		if err := os.Link(installed, previous); err != nil {
			return fmt.Errorf("keep %s as %s: %w", installed, previous, err)
		}
		if err := os.Rename(next, installed); err != nil {
			return fmt.Errorf("rename %s over %s: %w", next, installed, err)
		}
		return nil
	}
	if err := swap(); err != nil {
		os.Remove(next)
		log.Error("upgrade: the binary could not be swapped; starting the old one again", "err", err)
		return execAgent(installed, argv, envFailed+"="+err.Error(), envSockets+"="+sockets)
	}
	log.Info("upgrade: binary swapped; restarting on it", "binary", installed, "previous", previous)
	return execAgent(installed, argv, envPrevious+"="+previous, envPeers+"="+strconv.Itoa(peers), envSockets+"="+sockets)
}

// rollBack puts the previous binary back over installed and executes it,
// telling it why.
func rollBack(log *slog.Logger, previous, installed string, argv []string, why, sockets string) error {
	log.Error("upgrade failed: restoring the previous binary", "why", why, "previous", previous)
	if err := os.Rename(previous, installed); err != nil {
		return fmt.Errorf("upgrade failed (%s), and restoring %s failed too: %w", why, previous, err)
	}
	return execAgent(installed, argv, envFailed+"="+why, envSockets+"="+sockets)
}

// execAgent replaces this process with bin, the environment plus marks.
func execAgent(bin string, argv []string, marks ...string) error {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UNCLOUD_UPGRADE_") {
			env = append(env, kv)
		}
	}
	args := append([]string{bin}, argv...)
	if err := syscall.Exec(bin, args, append(env, marks...)); err != nil {
		return fmt.Errorf("execute %s: %w", bin, err)
	}
	return nil // not reached
}
