package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/agent/hostnet"
	"github.com/uncloud-mesh/uncloud/agent/rootless"
)

// A rootless agent (agent/rootless) lives in rootlesskit's network
// namespace, where 127.0.0.1 is not the host's and no socket on the
// host's network can be made. What it needs there, its starter makes
// before entering: the proxies' listeners on the host's addresses
// (handed in as descriptors, agent/rootless.EnvHostSide) and a helper
// process that stays outside and dials the host's 127.0.0.1 for exposed
// ports (agent/rootless/hostdial.go).

// hostSideStart is what the starter needs to prepare the host side: the
// data dir's settings and the start flags that change them.
type hostSideStart struct {
	dataDir string
	flags   hostnet.Change
}

// prepare opens the proxies' listeners on the host and starts the
// helper, and returns the environment entry that hands them to the
// agent. What fails is logged and left out: the agent inside then says
// which proxy or port it lacks.
func (h hostSideStart) prepare(log *slog.Logger) string {
	s, err := hostnet.Load(h.dataDir)
	if err == nil && !h.flags.Empty() {
		s, err = s.Apply(h.flags, agent.ReservedPorts())
	}
	if err != nil {
		log.Error("rootless: host networking settings unreadable; no proxies on the host", "err", err)
	}
	listeners := map[string]*os.File{}
	for _, addr := range []string{s.SOCKS5, s.HTTPProxy} {
		if addr == "" || listeners[addr] != nil {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("rootless: a proxy cannot listen on the host", "listen", addr, "err", err)
			continue
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			log.Error("rootless: a proxy's host socket", "listen", addr, "err", err)
			continue
		}
		listeners[addr] = f
	}
	dial, err := startHostSideHelper(h.dataDir)
	if err != nil {
		log.Error("rootless: no host-side helper; exposed ports will not reach the host", "err", err)
	}
	spec, err := rootless.Handoff(listeners, dial)
	if err != nil {
		log.Error("rootless: hand the host sockets to the agent", "err", err)
		return ""
	}
	return rootless.EnvHostSide + "=" + spec
}

// startHostSideHelper starts `uncloud agent-hostside` on one end of a
// socketpair and returns the other end (close-on-exec: Handoff
// duplicates it for the agent).
func startHostSideHelper(dataDir string) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "host-side helper"), os.NewFile(uintptr(fds[1]), "agent")
	defer theirs.Close()
	self, err := os.Executable()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	cmd := exec.Command(self, "agent-hostside", "--data-dir", dataDir)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("start %s agent-hostside: %w", self, err)
	}
	// The helper is reaped by whoever inherits it: this process becomes
	// the agent (exec), which never waits for it.
	return ours, nil
}

// agentHostSideCmd is the helper: it answers the agent's dial requests
// on fd 3 until the agent's end closes.
type agentHostSideCmd struct {
	DataDir string `help:"The agent's data dir: its settings say which ports are exposed." default:"${datadir}" placeholder:"DIR"`
}

func (c agentHostSideCmd) Run(g *globals) error {
	// The agent stops on these and then closes its end; the helper
	// outlives it only as long as its last connections' dials.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	fc, err := net.FileConn(os.NewFile(3, "agent"))
	if err != nil {
		return fmt.Errorf("agent-hostside: fd 3 is not the agent's socket: %w", err)
	}
	conn, ok := fc.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("agent-hostside: fd 3 is a %T, not a unix socket", fc)
	}
	srv := &rootless.HostDialServer{Allowed: c.allowed, Log: g.Logger.With("component", "hostside")}
	return srv.Serve(context.Background(), conn)
}

// allowed passes the ports the data dir's settings expose now.
func (c agentHostSideCmd) allowed(proto string, port uint16) error {
	s, err := hostnet.Load(c.DataDir)
	if err != nil {
		return fmt.Errorf("read the exposed ports: %w", err)
	}
	for _, p := range s.Expose {
		if p.Port == port && p.Proto == proto {
			return nil
		}
	}
	return fmt.Errorf("port %d/%s is not exposed", port, proto)
}

// takeHostSide takes what the starter handed in (rootless.EnvHostSide),
// and removes it from the environment: an upgrade's re-exec hands the
// descriptors on anew (passHostSide).
func takeHostSide(log *slog.Logger) *rootless.HostSide {
	spec := os.Getenv(rootless.EnvHostSide)
	os.Unsetenv(rootless.EnvHostSide)
	hs, err := rootless.TakeHostSide(spec)
	if err != nil {
		log.Error("rootless: the host sockets handed in are not usable", "err", err)
	}
	if spec == "" {
		log.Warn("rootless: no host sockets handed in; the proxies and exposed ports do not reach the host")
	}
	return hs
}

// passHostSide puts hs's descriptors in the environment of the process
// this one executes next (an upgrade or a rollback).
func passHostSide(log *slog.Logger, hs *rootless.HostSide) {
	spec, err := hs.Pass()
	if err != nil {
		log.Warn("upgrade: the host sockets of rootless mode are not handed over", "err", err)
		return
	}
	if spec != "" {
		os.Setenv(rootless.EnvHostSide, spec)
	}
}
