package main

import (
	"log/slog"
	"os"
	"strings"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/agent/rootless"
	"github.com/uncloud-mesh/uncloud/agent/static"
	"github.com/uncloud-mesh/uncloud/tun"
)

// withHostUDP binds the WireGuard port on the host's network for an agent
// about to enter a rootless engine's namespaces, and adds to env the
// variable that hands the socket in (agent/rootless.EnvUDP). Behind
// slirp4netns's NAT the mesh ran at a third of a kernel machine's speed,
// and peers saw slirp's ephemeral port instead of the host's. port 0, or
// a port the host already uses, leaves env as it was: the agent then binds
// inside the namespace, behind slirp4netns, as before.
func withHostUDP(log *slog.Logger, env []string, port uint16) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, rootless.EnvUDP+"=") {
			out = append(out, kv)
		}
	}
	if port == 0 {
		return out
	}
	// The file stays open (and without close-on-exec) through the exec
	// that follows; it is never closed here on success.
	_, entry, err := rootless.OpenHostUDP(port)
	if err != nil {
		log.Warn("WireGuard stays behind slirp4netns's NAT (slower, and peers see its port, not the host's)", "err", err)
		return out
	}
	log.Info("WireGuard socket bound on the host's network for the rootless agent", "port", port)
	return append(out, entry)
}

// stateListenPort is the WireGuard port of the machine in dataDir, or
// tun.DefaultListenPort when it has no state yet.
func stateListenPort(dataDir string) uint16 {
	st, err := membership.LoadMachineState(dataDir)
	if err != nil || st.ListenPort == 0 {
		return tun.DefaultListenPort
	}
	return st.ListenPort
}

// staticListenPort is the WireGuard port a static config file names, 0
// when it cannot be read (the agent reports that itself, inside).
func staticListenPort(path string) uint16 {
	cfg, err := static.LoadConfig(path)
	if err != nil {
		return 0
	}
	if cfg.Device.ListenPort == 0 {
		return tun.DefaultListenPort
	}
	return cfg.Device.ListenPort
}

// takeHostUDP is the socket the starter handed in, inside the namespace;
// nil outside or when none came.
func takeHostUDP(log *slog.Logger) *os.File {
	f, err := rootless.TakeHostUDP(os.Getenv, os.Unsetenv)
	if err != nil {
		log.Warn("the handed-in WireGuard socket is not usable; binding inside the namespace", "err", err)
		return nil
	}
	return f
}

// passHostUDP hands the socket on to the process an upgrade or rollback
// executes next (the same PID, still inside the namespace, where it could
// not bind the host's port itself): the descriptor loses close-on-exec,
// and the environment names it.
func passHostUDP(f *os.File) {
	if f == nil {
		return
	}
	entry, err := rootless.HandOn(f)
	if err != nil {
		return // the next process binds inside, behind slirp4netns
	}
	k, v, _ := strings.Cut(entry, "=")
	os.Setenv(k, v)
}
