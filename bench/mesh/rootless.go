package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// uncloudRootlessPeer runs B's agent as rootless mode does: an
// unprivileged user, made for the run, starts rootlesskit with
// slirp4netns (as dockerd-rootless.sh does; a sleep stands in for
// dockerd, writing docker.pid where the agent looks), then `uncloud agent
// --config … --rootless`, which binds the WireGuard port on B's own
// network, enters rootlesskit's user and network namespaces with nsenter
// and runs a kernel TUN there over that handed-in socket. iperf3's server
// runs in that namespace on B's mesh address, where rootless Docker's
// containers would sit behind a bridge.
func uncloudRootlessPeer() peer {
	return peer{
		name: "uncloud-rootless",
		about: "uncloud kernel TUN in A ↔ uncloud kernel TUN inside rootlesskit+slirp4netns (an unprivileged user's namespaces, " +
			"as rootless Docker runs) in B, its WireGuard socket bound on B's network before entering; CPU includes slirp4netns",
		tools: []string{toolUncloud, "rootlesskit", "slirp4netns", "newuidmap", "setpriv", "nsenter"},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startUncloudRootless(ctx, env, l, true)
		},
	}
}

// uncloudRootlessSlirpPeer is the rootless agent whose WireGuard socket
// sits behind slirp4netns's NAT: the agent as rootlesskit's child, binding
// inside. It is what an agent gets when the host's port is taken, and
// what every rootless agent did before the starter bound the socket.
func uncloudRootlessSlirpPeer() peer {
	return peer{
		name: "uncloud-rootless-slirp",
		about: "as uncloud-rootless, but the agent is rootlesskit's child and binds its WireGuard socket inside, behind slirp4netns's NAT " +
			"(B's handshake opens the mapping, A answers through it); CPU includes slirp4netns",
		tools: []string{toolUncloud, "rootlesskit", "slirp4netns", "newuidmap", "setpriv"},
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return startUncloudRootless(ctx, env, l, false)
		},
	}
}

func startUncloudRootless(ctx context.Context, env *environment, l *lab, hostSocket bool) (*session, error) {
	s := &session{target: uncloudAddr(2), serverBind: uncloudAddr(2), pingTarget: uncloudAddr(2)}
	// Both ways: the rootless machine's receive and send paths differ
	// (recvmmsg vs sendmmsg on the handed-in socket, slirp4netns's
	// inbound and outbound NAT).
	s.directions = []direction{{suffix: " (B receives)"}, {suffix: " (B sends)", reverse: true}}
	u, err := newBenchUser(l.dir)
	s.cleanup = append(s.cleanup, u.remove)
	if err != nil {
		return s, err
	}
	ka, err := newKeyPair()
	if err != nil {
		return s, err
	}
	kb, err := newKeyPair()
	if err != nil {
		return s, err
	}
	confA := filepath.Join(l.dir, "a.conf")
	confB := filepath.Join(u.home, "b.conf")
	if err := os.WriteFile(confA, []byte(fmt.Sprintf(uncloudConfig, ka.private, uncloudAddr(1), kb.public, underlayB,
		meshaddr.Subnet(2).Prefix().Addr().String())), 0o600); err != nil {
		return s, err
	}
	if err := os.WriteFile(confB, []byte(fmt.Sprintf(uncloudConfig, kb.private, uncloudAddr(2), ka.public, underlayA,
		meshaddr.Subnet(1).Prefix().Addr().String())), 0o600); err != nil {
		return s, err
	}
	if err := os.Chown(confB, u.uid, u.gid); err != nil {
		return s, err
	}
	// The build may sit where only root enters.
	bin, err := os.ReadFile(env.uncloud)
	if err != nil {
		return s, err
	}
	u.bin = filepath.Join(u.home, "uncloud")
	if err := os.WriteFile(u.bin, bin, 0o755); err != nil {
		return s, err
	}
	a, err := startDaemon("uncloud in "+l.a, filepath.Join(l.dir, "a.log"), nil,
		nsCmd(l.a, l.pin.daemonA, env.uncloud, "agent", "--config", confA)...)
	if err != nil {
		return s, err
	}
	s.daemons = append(s.daemons, a)
	if err := a.waitFor(ctx, `msg="mesh up"`); err != nil {
		return s, err
	}
	// This sandbox's /dev/net/tun is 0600; Debian's is 0666, which
	// slirp4netns's tap and the agent need: a 0666 node is bind-mounted
	// over it for B's commands only.
	state := filepath.Join(u.home, "rootlesskit")
	run := filepath.Join(u.home, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		return s, err
	}
	if err := os.Chown(run, u.uid, u.gid); err != nil {
		return s, err
	}
	asUser := []string{"setpriv", "--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid),
		"--init-groups", "env", "-i", "HOME=" + u.home, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR=" + run,
		"DOCKER_HOST=unix://" + filepath.Join(run, "docker.sock")}
	rootlesskit := []string{"rootlesskit", "--net=slirp4netns", "--mtu=65520", "--disable-host-loopback", "--state-dir=" + state}
	var b *daemon
	if hostSocket {
		script := `mount --bind "$1" /dev/net/tun || exit 1
run=$2 rk=$3 agent=$4
sh -c "exec $rk sh -c 'echo \$\$ > $run/docker.pid; exec sleep infinity'" >"$run/rootlesskit.log" 2>&1 &
i=0; while [ ! -s "$run/docker.pid" ]; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.05; done
exec sh -c "exec $agent"`
		quote := func(args []string) string {
			q := make([]string, len(args))
			for i, a := range args {
				q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
			}
			return strings.Join(q, " ")
		}
		rk := quote(append(append([]string{}, asUser...), rootlesskit...))
		agent := quote(append(append([]string{}, asUser...), u.bin, "agent", "--config", confB, "--rootless"))
		b, err = startDaemon("uncloud rootless in "+l.b, filepath.Join(l.dir, "b.log"), nil,
			nsCmd(l.b, l.pin.daemonB, "sh", "-c", script, "sh", u.tun, run, rk, agent)...)
	} else {
		script := `mount --bind "$1" /dev/net/tun && shift && exec "$@"`
		argv := append([]string{"sh", "-c", script, "sh", u.tun}, asUser...)
		argv = append(append(argv, rootlesskit...), u.bin, "agent", "--config", confB)
		b, err = startDaemon("uncloud rootless in "+l.b, filepath.Join(l.dir, "b.log"), nil, nsCmd(l.b, l.pin.daemonB, argv...)...)
	}
	if err != nil {
		return s, err
	}
	s.daemons = append(s.daemons, b)
	if err := b.waitFor(ctx, `msg="mesh up"`); err != nil {
		return s, err
	}
	// The process in rootlesskit's namespaces: its child (the agent, or
	// the dockerd stand-in).
	raw, err := os.ReadFile(filepath.Join(state, "child_pid"))
	if err != nil {
		return s, fmt.Errorf("rootlesskit child pid: %w", err)
	}
	child := strings.TrimSpace(string(raw))
	s.serverWrap = func(cmd []string) []string {
		return append([]string{"nsenter", "-t", child, "-n"}, cmd...)
	}
	if pid, _ := strconv.Atoi(child); pid != b.pid() {
		s.otherPIDs = append(s.otherPIDs, pid)
	}
	if hostSocket {
		if !b.out.contains("WireGuard socket bound on the host's network") {
			return s, fmt.Errorf("B's agent did not bind its WireGuard socket on B's network: %s", tail(b.out.String(), 2000))
		}
		s.note = "B's agent entered rootlesskit's namespaces (nsenter) with its WireGuard socket bound on B's network"
	} else {
		s.note = "B's agent is rootlesskit's child (its own user and network namespaces); WireGuard crosses slirp4netns"
	}
	// slirp4netns is rootlesskit's child, which is the agent's (the
	// shell that became it started rootlesskit) or the agent's parent.
	if slirp := childNamed(b.pid(), "slirp4netns"); slirp > 0 {
		s.otherPIDs = append(s.otherPIDs, slirp)
	}
	return s, nil
}

// benchUser is an unprivileged system user with subordinate ids, made for
// one run and removed after it.
type benchUser struct {
	name, home, bin, tun string
	uid, gid             int
}

func newBenchUser(dir string) (*benchUser, error) {
	u := &benchUser{name: fmt.Sprintf("ucb%d", os.Getpid()%100000)}
	home, err := os.MkdirTemp("", "uncloud-bench-rootless-")
	if err != nil {
		return u, err
	}
	u.home = home
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin",
		"--user-group", u.name).CombinedOutput(); err != nil {
		return u, fmt.Errorf("useradd: %w: %s", err, out)
	}
	out, err := exec.Command("id", "-u", u.name).Output()
	if err != nil {
		return u, err
	}
	u.uid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	if out, err = exec.Command("id", "-g", u.name).Output(); err != nil {
		return u, err
	}
	u.gid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	first := 1_000_000 + (u.uid%1000)*65536
	r := fmt.Sprintf("%d-%d", first, first+65535)
	if out, err := exec.Command("usermod", "--add-subuids", r, "--add-subgids", r, u.name).CombinedOutput(); err != nil {
		return u, fmt.Errorf("usermod: %w: %s", err, out)
	}
	os.Chmod(home, 0o755)
	os.Chown(home, u.uid, u.gid)
	u.tun = filepath.Join(home, "tun")
	if err := syscall.Mknod(u.tun, syscall.S_IFCHR|0o666, 10<<8|200); err != nil {
		return u, fmt.Errorf("mknod: %w", err)
	}
	os.Chmod(u.tun, 0o666)
	return u, nil
}

// remove ends the user's processes (by uid, each by PID), then the user
// and its home.
func (u *benchUser) remove() {
	if u.uid > 0 {
		for range 3 {
			ents, _ := os.ReadDir("/proc")
			n := 0
			for _, e := range ents {
				pid, err := strconv.Atoi(e.Name())
				var st syscall.Stat_t
				if err == nil && syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == u.uid {
					syscall.Kill(pid, syscall.SIGKILL)
					n++
				}
			}
			if n == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		exec.Command("userdel", u.name).Run()
	}
	if u.home != "" {
		os.RemoveAll(u.home)
	}
}

// childNamed finds a descendant of pid whose command is name.
func childNamed(pid int, name string) int {
	ents, _ := os.ReadDir("/proc")
	parents := map[int]int{}
	names := map[int]string{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		names[p] = s[open+1 : close]
		f := strings.Fields(s[close+1:])
		if len(f) > 1 {
			parents[p], _ = strconv.Atoi(f[1])
		}
	}
	for p, n := range names {
		if n != name {
			continue
		}
		for q := parents[p]; q > 1; q = parents[q] {
			if q == pid {
				return p
			}
		}
	}
	return 0
}
