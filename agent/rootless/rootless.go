// Package rootless owns the rootless mode: finding a rootless Docker
// Engine (dockerd-rootless.sh under rootlesskit) of the agent's user,
// saying what is missing where there is none, and moving the agent into
// that engine's user and network namespaces, where it holds CAP_NET_ADMIN
// and runs the mesh on a kernel TUN next to Docker's bridge.
//
// Go cannot join a user namespace from a running (threaded) process, so
// the agent re-executes itself through nsenter(1), as rootlesskit's own
// tools do, keeping its PID. It stays in the host's mount namespace: its
// data dir, socket and the Docker socket keep the paths the user sees.
package rootless

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// EnvPID carries the rootless dockerd's PID into the re-executed agent:
// set, it says the agent runs inside that engine's namespaces.
const EnvPID = "UNCLOUD_ROOTLESS_PID"

// ErrNoEngine says no rootless dockerd runs for this user at the address;
// the agent then keeps its other modes.
var ErrNoEngine = errors.New("no rootless Docker Engine runs here")

// Engine is a running rootless dockerd.
type Engine struct {
	PID      int    // dockerd, inside rootlesskit's namespaces
	Socket   string // its API socket, as the host sees it
	StateDir string // rootlesskit's state dir (its api.sock), from dockerd's environment
}

// DockerHost is the engine's address for DOCKER_HOST.
func (e Engine) DockerHost() string { return "unix://" + e.Socket }

// System is where the files the package reads live: "/" normally, a
// directory shaped like one in tests.
type System struct {
	Root string
}

func (s System) path(p string) string { return filepath.Join(s.Root, p) }

// DefaultSocket is where dockerd-rootless.sh serves for uid: under
// XDG_RUNTIME_DIR when set, else /run/user/UID.
func DefaultSocket(uid int, runtimeDir string) string {
	if runtimeDir == "" {
		runtimeDir = "/run/user/" + strconv.Itoa(uid)
	}
	return filepath.Join(runtimeDir, "docker.sock")
}

// Find looks for the rootless dockerd serving dockerHost (a unix:// address
// or a socket path; "" means DefaultSocket). dockerd writes its PID next
// to its socket (docker.pid); the engine is rootless when that process
// runs under rootlesskit (ROOTLESSKIT_STATE_DIR in its environment) in a
// user namespace other than ours. ErrNoEngine (wrapped) when none runs.
func (s System) Find(dockerHost string, uid int, runtimeDir string) (Engine, error) {
	sock := strings.TrimPrefix(dockerHost, "unix://")
	if dockerHost == "" {
		sock = DefaultSocket(uid, runtimeDir)
	}
	if !strings.HasPrefix(sock, "/") {
		return Engine{}, fmt.Errorf("%w: Docker address %q is not a unix socket", ErrNoEngine, dockerHost)
	}
	pidFile := filepath.Join(filepath.Dir(sock), "docker.pid")
	raw, err := os.ReadFile(s.path(pidFile))
	if err != nil {
		return Engine{}, fmt.Errorf("%w: no %s (%v); start it with 'systemctl --user start docker' or dockerd-rootless.sh", ErrNoEngine, pidFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return Engine{}, fmt.Errorf("%w: %s holds %q, not a PID", ErrNoEngine, pidFile, bytes.TrimSpace(raw))
	}
	env, err := os.ReadFile(s.path(fmt.Sprintf("/proc/%d/environ", pid)))
	if err != nil {
		return Engine{}, fmt.Errorf("%w: dockerd of %s (pid %d) is not running: %v", ErrNoEngine, pidFile, pid, err)
	}
	e := Engine{PID: pid, Socket: sock}
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("ROOTLESSKIT_STATE_DIR=")); ok {
			e.StateDir = string(v)
		}
	}
	if e.StateDir == "" {
		return Engine{}, fmt.Errorf("%w: dockerd pid %d (%s) does not run under rootlesskit", ErrNoEngine, pid, sock)
	}
	theirs, err1 := os.Readlink(s.path(fmt.Sprintf("/proc/%d/ns/user", pid)))
	ours, err2 := os.Readlink(s.path("/proc/self/ns/user"))
	if err := errors.Join(err1, err2); err != nil {
		return Engine{}, fmt.Errorf("rootless dockerd pid %d: read its user namespace: %w", pid, err)
	}
	if theirs == ours {
		return Engine{}, fmt.Errorf("%w: dockerd pid %d shares our user namespace", ErrNoEngine, pid)
	}
	return e, nil
}

// Inside says whether this process is the agent re-executed into a
// rootless engine's namespaces (EnvPID set), and checks that it still
// shares that dockerd's network namespace.
func (s System) Inside(getenv func(string) string) (pid int, inside bool, err error) {
	v := getenv(EnvPID)
	if v == "" {
		return 0, false, nil
	}
	pid, err = strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return 0, true, fmt.Errorf("%s=%q is not a PID", EnvPID, v)
	}
	if err := s.SameNetwork(pid); err != nil {
		return pid, true, err
	}
	return pid, true, nil
}

// SameNetwork fails unless process pid (the rootless dockerd) is alive in
// this process's network namespace: a dockerd restarted under a new
// rootlesskit has a new one, and the agent must follow it.
func (s System) SameNetwork(pid int) error {
	theirs, err := os.Readlink(s.path(fmt.Sprintf("/proc/%d/ns/net", pid)))
	if err != nil {
		return fmt.Errorf("the rootless dockerd (pid %d) is gone: %w", pid, err)
	}
	ours, err := os.Readlink(s.path("/proc/self/ns/net"))
	if err != nil {
		return fmt.Errorf("read this process's network namespace: %w", err)
	}
	if theirs != ours {
		return fmt.Errorf("the rootless dockerd (pid %d) is in network namespace %s, this agent in %s", pid, theirs, ours)
	}
	return nil
}

// Enter replaces this process (same PID) with argv run inside e's user and
// network namespaces by nsenter. It returns only on failure. The new
// process sees EnvPID and DOCKER_HOST=e's socket.
func Enter(e Engine, argv []string, env []string) error {
	nsenter, err := lookPath("nsenter")
	if err != nil {
		return fmt.Errorf("enter the rootless Docker's namespaces: %w (install util-linux)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("enter the rootless Docker's namespaces: find own binary: %w", err)
	}
	args := []string{"nsenter", "-U", "-n", "--preserve-credentials", "-t", strconv.Itoa(e.PID), "--", self}
	args = append(args, argv...)
	env = append(withoutKeys(env, EnvPID, "DOCKER_HOST"), EnvPID+"="+strconv.Itoa(e.PID), "DOCKER_HOST="+e.DockerHost())
	err = syscall.Exec(nsenter, args, env)
	return fmt.Errorf("enter the rootless Docker's namespaces (dockerd pid %d): exec %s: %w", e.PID, nsenter, err)
}

func withoutKeys(env []string, keys ...string) []string {
	out := make([]string, 0, len(env))
next:
	for _, kv := range env {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
