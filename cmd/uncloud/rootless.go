package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/rootless"
)

// enterRootless moves an unprivileged agent into its user's rootless
// Docker Engine (agent/rootless) and does not return when it does. It
// returns the engine's dockerd PID when this process already runs inside
// it, and 0 when the agent keeps the host's namespaces: root, --userspace,
// or (without --rootless) no rootless engine running. With --rootless,
// what is missing for that mode is an error that names it.
//
// argv is the command the agent re-executes as, inside. udpPort is its
// WireGuard port, bound on the host's network first (withHostUDP); 0 for
// a command that has no mesh. host, when set, says to prepare what the
// agent needs of the host's network before it enters
// (rootless_hostside.go); nil for commands other than the agent.
func enterRootless(log *slog.Logger, want, userspace bool, dockerHost string, argv []string, udpPort uint16, host *hostSideStart) (int, error) {
	sys := rootless.System{Root: "/"}
	pid, inside, err := sys.Inside(os.Getenv)
	if inside {
		return pid, err
	}
	switch {
	case want && userspace:
		return 0, fmt.Errorf("--rootless and --userspace: choose one")
	case userspace:
		return 0, nil
	case os.Geteuid() == 0:
		if want {
			return 0, fmt.Errorf("--rootless is for an unprivileged user with rootless Docker; as root the mesh runs in the kernel next to the system's Docker")
		}
		return 0, nil
	}
	e, err := sys.Find(dockerHost, os.Getuid(), os.Getenv("XDG_RUNTIME_DIR"))
	if err != nil {
		if !want {
			log.Debug("no rootless Docker to join", "err", err)
			return 0, nil
		}
		name := fmt.Sprint(os.Getuid())
		if u, uerr := user.Current(); uerr == nil {
			name = u.Username
		}
		missing := sys.Missing(name, os.Getuid(), exec.LookPath)
		if len(missing) > 0 {
			return 0, fmt.Errorf("--rootless: this host lacks what rootless Docker needs: %s", strings.Join(missing, "; "))
		}
		return 0, fmt.Errorf("--rootless: %w", err)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, rootless.EnvHostSide+"=") })
	if host != nil {
		if kv := host.prepare(log); kv != "" {
			env = append(env, kv)
		}
	}
	log.Info("entering the rootless Docker's namespaces", "dockerd_pid", e.PID, "docker_host", e.DockerHost())
	return 0, rootless.Enter(e, argv, withHostUDP(log, env, udpPort))
}

// watchRootless reports when the rootless dockerd the agent runs next to
// is gone or restarted in new namespaces (a new rootlesskit): the agent's
// mesh and the containers' bridge no longer meet, so it exits and its
// service manager starts it again, inside the new ones.
func watchRootless(ctx context.Context, pid int) <-chan error {
	out := make(chan error, 1)
	if pid == 0 {
		return out
	}
	sys := rootless.System{Root: "/"}
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := sys.SameNetwork(pid); err != nil {
				out <- err
				return
			}
		}
	}()
	return out
}
