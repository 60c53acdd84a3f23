package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/tun"
)

type uninstallCmd struct {
	Purge      bool   `help:"Also remove the data dir (keys and state) and the config dir: this machine cannot start again."`
	Yes        bool   `short:"y" help:"Do not ask: remove what the plan shows (needed without a terminal)."`
	DataDir    string `help:"The agent's data dir." default:"${datadir}" placeholder:"DIR"`
	ConfigDir  string `help:"The config dir, removed with --purge." default:"/etc/uncloud" placeholder:"DIR"`
	UnitDir    string `help:"Where 'uncloud install' wrote the systemd unit (default: /etc/systemd/system; with --user ~/.config/systemd/user)." placeholder:"DIR"`
	User       bool   `help:"Undo 'uncloud install --user' and an agent run by this unprivileged user: the user unit, and (entering the user's rootless Docker, when it runs) the containers, rules and routes inside it."`
	DockerHost string `help:"Docker Engine address (default: DOCKER_HOST or unix:///var/run/docker.sock)." env:"DOCKER_HOST" placeholder:"unix:///PATH"`
}

func (uninstallCmd) Help() string {
	return `Removes everything the agent added to this host, in this order: the agent itself (the systemd unit 'uncloud install' made is disabled and stopped; an agent started by init or join is found through its socket and sent SIGTERM), uncloud's containers (stopped and removed; their named volumes stay), the Docker network "uncloud" (only when no other container uses it), the firewall chains UNCLOUD-* and the nftables table "ip uncloud", the TUN interface and uncloud's routes to the mesh including the fail-closed "unreachable" route, the systemd unit file, and the local API socket. With --purge also the data dir and /etc/uncloud.

It shows the plan first and asks on a terminal; without one it needs --yes. Each step says what it did, or that it found nothing; a step that fails says why and the rest still run (the command then exits 1). Run it again to see that nothing is left.

Without --purge the data dir stays: 'uncloud agent' (or 'uncloud install') starts this machine again, still a member of its network. To take the machine out of its network first, run 'uncloud leave' here (or 'uncloud machine rm NAME' on another machine).

Examples:
  sudo uncloud uninstall
  sudo uncloud uninstall --purge --yes`
}

// cleanupStep is one kind of thing the agent leaves on the host. find
// lists what is there now (empty: nothing, and none may say why);
// remove takes it out and says what it did, line by line.
type cleanupStep struct {
	what   string
	find   func(ctx context.Context) (items []string, none string, err error)
	remove func(ctx context.Context) ([]string, error)
}

func (c uninstallCmd) Run(g *globals) error {
	hostOnly := false
	if c.User {
		var err error
		if hostOnly, err = c.enterUser(g); err != nil {
			return err
		}
	} else if os.Geteuid() != 0 {
		return errors.New("uninstall removes interfaces, routes and firewall rules: run it as root (sudo uncloud uninstall), or as the user whose agent it is with --user")
	}
	if c.UnitDir == "" {
		c.UnitDir = systemUnitDir
	}
	ctx := context.Background()
	steps := c.steps(socketPath(g.Connect))
	if hostOnly {
		steps = userHostSteps(steps)
	}

	plan := planOf(ctx, steps)
	keep := ""
	if !c.Purge && exists(c.DataDir) {
		keep = fmt.Sprintf("Kept: %s (this machine's keys and state), so 'uncloud agent' can start it again; --purge removes it too.", c.DataDir)
	}
	if len(plan) == 0 {
		fmt.Println("Nothing of uncloud is left on this host.")
		if keep != "" {
			fmt.Println(keep)
		}
		return nil
	}
	fmt.Println("This removes from this host:")
	for _, l := range plan {
		fmt.Println(l)
	}
	if keep != "" {
		fmt.Println(keep)
	}
	if err := confirm(c.Yes, "Remove all of this?", "remove the above"); err != nil {
		return err
	}

	failed := runSteps(ctx, steps)
	if keep != "" {
		fmt.Println(keep)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d step(s) failed (%s); fix what they say and run uninstall again", len(failed), strings.Join(failed, ", "))
	}
	if keep != "" {
		fmt.Println("Done: nothing of uncloud is left on this host but its data dir.")
	} else {
		fmt.Println("Done: nothing of uncloud is left on this host.")
	}
	return nil
}

// planOf is what each step would remove now, a line each.
func planOf(ctx context.Context, steps []cleanupStep) []string {
	var plan []string
	for _, s := range steps {
		items, _, err := s.find(ctx)
		if err != nil {
			plan = append(plan, fmt.Sprintf("  %s: cannot tell (%v)", s.what, err))
			continue
		}
		for _, it := range items {
			plan = append(plan, fmt.Sprintf("  %s: %s", s.what, it))
		}
	}
	return plan
}

// confirm asks question on a terminal unless yes; without a terminal it
// refuses, saying that --yes would do what.
func confirm(yes bool, question, what string) error {
	if yes {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return fmt.Errorf("not asking without a terminal: add --yes to %s", what)
	}
	fmt.Print(question + " [y/N] ")
	answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return errors.New("nothing done")
	}
	return nil
}

// runSteps runs each step (finding again what is there, since an
// earlier step may have taken it along), says what it did, and returns
// the steps that failed; a failure does not stop the rest.
func runSteps(ctx context.Context, steps []cleanupStep) (failed []string) {
	for _, s := range steps {
		items, none, err := s.find(ctx)
		switch {
		case err != nil:
			fmt.Printf("✗ %s: %v\n", s.what, err)
			failed = append(failed, s.what)
			continue
		case len(items) == 0:
			if none == "" {
				none = "nothing to do"
			}
			fmt.Printf("- %s: %s\n", s.what, none)
			continue
		}
		done, err := s.remove(ctx)
		for _, d := range done {
			fmt.Printf("✓ %s: %s\n", s.what, d)
		}
		if err != nil {
			fmt.Printf("✗ %s: %v\n", s.what, err)
			failed = append(failed, s.what)
		}
	}
	return failed
}

// steps are the cleanup steps, in the order that keeps each from being
// undone: the agent first (it would put back its network, rules and
// containers), the kernel's routes after the firewall.
func (c uninstallCmd) steps(socket string) []cleanupStep {
	// Only the names matter for removal; with the mesh interface set the
	// rules include every chain the agent can make (netstack has fewer).
	rules := runtime.Rules{Mesh: meshaddr.Mesh(), Bridge: runtime.BridgeName, MeshInterface: tun.DefaultInterfaceName,
		Subnet: netip.MustParsePrefix("10.210.0.0/24")}
	ipt := &runtime.IPTables{}
	groups := &runtime.Groups{}
	unit := filepath.Join(c.UnitDir, "uncloud.service")
	machine := ""
	if st, err := membership.LoadMachineState(c.DataDir); err == nil {
		machine = st.MachineID
	}
	docker := func(ctx context.Context, f func(*runtime.Leftovers) ([]string, string, error)) ([]string, string, error) {
		l, err := runtime.OpenLeftovers(ctx, c.DockerHost)
		if errors.Is(err, runtime.ErrUnavailable) {
			return nil, "nothing to do (Docker does not answer here)", nil
		}
		if err != nil {
			return nil, "", err
		}
		defer l.Close()
		return f(l)
	}
	return []cleanupStep{
		{
			what: "agent",
			find: func(ctx context.Context) ([]string, string, error) {
				var items []string
				if c.managerRunning() && c.unitActive() {
					items = append(items, "stop and disable the systemd service uncloud.service")
				}
				pid, err := agentPID(socket)
				if err != nil {
					return nil, "", err
				}
				if pid > 0 {
					items = append(items, fmt.Sprintf("stop the agent, pid %d (serving %s)", pid, socket))
				}
				for _, p := range strayAgents(pid) {
					items = append(items, fmt.Sprintf("stop the agent, pid %d (not serving %s)", p, socket))
				}
				return items, "", nil
			},
			remove: func(ctx context.Context) ([]string, error) {
				var done []string
				if c.managerRunning() && c.unitActive() {
					if err := c.systemctl("disable", "--now", "uncloud.service"); err != nil {
						return done, err
					}
					done = append(done, "ran systemctl disable --now uncloud.service")
				}
				pid, err := agentPID(socket)
				if err != nil {
					return done, err
				}
				pids := strayAgents(pid)
				if pid > 0 {
					pids = append([]int{pid}, pids...)
				}
				var errs []error
				for _, p := range pids {
					how, err := stopProcess(p, 30*time.Second)
					if err != nil {
						errs = append(errs, err)
						continue
					}
					done = append(done, fmt.Sprintf("agent pid %d %s", p, how))
				}
				return done, errors.Join(errs...)
			},
		},
		{
			what: "containers",
			find: func(ctx context.Context) ([]string, string, error) {
				return docker(ctx, func(l *runtime.Leftovers) ([]string, string, error) {
					cs, err := l.Containers(ctx, machine)
					var items []string
					for _, ct := range cs {
						items = append(items, fmt.Sprintf("stop and remove %s (service %s, %s)", ct.Name, orDash(ct.Service), ct.State))
					}
					return items, "", err
				})
			},
			remove: func(ctx context.Context) ([]string, error) {
				var done []string
				_, _, err := docker(ctx, func(l *runtime.Leftovers) ([]string, string, error) {
					cs, err := l.Containers(ctx, machine)
					if err != nil {
						return nil, "", err
					}
					var errs []error
					for _, ct := range cs {
						if err := l.RemoveContainer(ctx, ct.ID); err != nil {
							errs = append(errs, err)
							continue
						}
						done = append(done, "removed "+ct.Name)
					}
					return nil, "", errors.Join(errs...)
				})
				return done, err
			},
		},
		{
			what: "Docker network",
			find: func(ctx context.Context) ([]string, string, error) {
				return docker(ctx, func(l *runtime.Leftovers) ([]string, string, error) {
					st, err := l.Network(ctx, "")
					if err != nil || !st.Exists {
						return nil, "", err
					}
					if !st.Ours {
						return nil, fmt.Sprintf("a network %q exists but uncloud did not make it: left alone", runtime.NetworkName), nil
					}
					return []string{fmt.Sprintf("remove %q (bridge %s), unless containers that are not uncloud's use it", runtime.NetworkName, runtime.BridgeName)}, "", nil
				})
			},
			remove: func(ctx context.Context) ([]string, error) {
				_, _, err := docker(ctx, func(l *runtime.Leftovers) ([]string, string, error) {
					return nil, "", l.RemoveNetwork(ctx, "")
				})
				if err != nil {
					return nil, err
				}
				return []string{fmt.Sprintf("removed %q", runtime.NetworkName)}, nil
			},
		},
		{
			what: "iptables",
			find: func(ctx context.Context) ([]string, string, error) {
				var items []string
				for _, ch := range ipt.PresentChains(ctx, rules) {
					items = append(items, fmt.Sprintf("remove chain %s (table %s) and its jump", ch.Name, ch.Table))
				}
				return items, "", nil
			},
			remove: func(ctx context.Context) ([]string, error) {
				present := ipt.PresentChains(ctx, rules)
				err := ipt.Remove(ctx, rules)
				var done []string
				for _, ch := range present {
					done = append(done, fmt.Sprintf("removed %s/%s", ch.Table, ch.Name))
				}
				return done, err
			},
		},
		{
			what: "nftables",
			find: func(ctx context.Context) ([]string, string, error) {
				ok, err := groups.Present(ctx)
				if !ok || err != nil {
					return nil, "", err
				}
				return []string{"remove table " + groups.Table() + " (security groups)"}, "", nil
			},
			remove: func(ctx context.Context) ([]string, error) {
				if err := groups.Remove(ctx); err != nil {
					return nil, err
				}
				return []string{"removed table " + groups.Table()}, nil
			},
		},
		{
			what: "network",
			find: func(ctx context.Context) ([]string, string, error) {
				l, err := tun.FindLeftovers("", meshaddr.Mesh())
				var items []string
				if l.Interface != "" {
					items = append(items, "remove interface "+l.Interface)
				}
				for _, r := range l.Routes {
					items = append(items, "remove route "+tun.DescribeRoute(r))
				}
				return items, "", err
			},
			remove: func(ctx context.Context) ([]string, error) {
				l, err := tun.FindLeftovers("", meshaddr.Mesh())
				if err != nil {
					return nil, err
				}
				var done []string
				var errs []error
				if l.Interface != "" {
					if err := tun.RemoveInterface(l.Interface); err != nil {
						errs = append(errs, err)
					} else {
						done = append(done, "removed interface "+l.Interface)
					}
				}
				for _, r := range l.Routes {
					if err := tun.RemoveRoute(r); err != nil {
						errs = append(errs, err)
					} else {
						done = append(done, "removed route "+tun.DescribeRoute(r))
					}
				}
				return done, errors.Join(errs...)
			},
		},
		{
			what: "systemd unit",
			find: func(context.Context) ([]string, string, error) {
				if !exists(unit) {
					return nil, "", nil
				}
				return []string{"disable and remove " + unit}, "", nil
			},
			remove: func(context.Context) ([]string, error) {
				var done []string
				if c.managerRunning() {
					// Enabled but not running: disable removes its links.
					if err := c.systemctl("disable", "uncloud.service"); err != nil {
						return done, err
					}
					done = append(done, "ran systemctl disable uncloud.service")
				}
				if err := os.Remove(unit); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return done, fmt.Errorf("remove %s: %w", unit, err)
				}
				done = append(done, "removed "+unit)
				if c.managerRunning() {
					if err := c.systemctl("daemon-reload"); err != nil {
						return done, err
					}
					done = append(done, "ran systemctl daemon-reload")
				}
				return done, nil
			},
		},
		c.filesStep("socket", socket, filepath.Join(filepath.Dir(socket), "secrets")),
		c.purgeStep(),
	}
}

// filesStep removes paths (files or trees) and then their parent
// directories if that left them empty.
func (c uninstallCmd) filesStep(what string, paths ...string) cleanupStep {
	present := func() []string {
		var out []string
		for _, p := range paths {
			if exists(p) {
				out = append(out, p)
			}
		}
		return out
	}
	return cleanupStep{
		what: what,
		find: func(context.Context) ([]string, string, error) {
			var items []string
			for _, p := range present() {
				items = append(items, "remove "+p)
			}
			return items, "", nil
		},
		remove: func(context.Context) ([]string, error) {
			var done []string
			var errs []error
			for _, p := range present() {
				if err := removeTree(p); err != nil {
					errs = append(errs, err)
					continue
				}
				done = append(done, "removed "+p)
				if dir := filepath.Dir(p); os.Remove(dir) == nil {
					done = append(done, "removed empty "+dir)
				}
			}
			return done, errors.Join(errs...)
		},
	}
}

// purgeStep removes the data and config dirs with --purge.
func (c uninstallCmd) purgeStep() cleanupStep {
	if !c.Purge {
		return cleanupStep{what: "data dir", find: func(context.Context) ([]string, string, error) {
			return nil, "kept (no --purge)", nil
		}}
	}
	return c.filesStep("data", c.DataDir, c.ConfigDir)
}

// removeTree removes p and everything under it. A directory that is a
// mount point cannot go itself: it is emptied instead.
func removeTree(p string) error {
	err := os.RemoveAll(p)
	if err == nil || !errors.Is(err, syscall.EBUSY) {
		if err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	}
	entries, rerr := os.ReadDir(p)
	if rerr != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(p, e.Name())); err != nil {
			return fmt.Errorf("empty %s: %w", p, err)
		}
	}
	return nil
}

// exists reports whether p exists; a directory only counts if it holds
// something (an empty mount point is not a leftover).
func exists(p string) bool {
	fi, err := os.Lstat(p)
	if err != nil {
		return false
	}
	if !fi.IsDir() {
		return true
	}
	entries, err := os.ReadDir(p)
	return err != nil || len(entries) > 0
}

// agentPID is the pid of the process serving the local API socket (the
// kernel's SO_PEERCRED, so no pid file can be stale); 0 when nobody does.
func agentPID(socket string) (int, error) {
	conn, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, nil
		}
		return 0, fmt.Errorf("connect to %s: %w", socket, err)
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("socket %s: %w", socket, err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("socket %s: %w", socket, err)
	}
	if credErr != nil {
		return 0, fmt.Errorf("who serves %s: %w", socket, credErr)
	}
	return int(cred.Pid), nil
}

// stopProcess sends SIGTERM and waits up to grace for pid to exit (the
// agent shuts down cleanly on it), then SIGKILL. It says which it took.
func stopProcess(pid int, grace time.Duration) (string, error) {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return "had already exited", nil
		}
		return "", fmt.Errorf("signal pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return "stopped (SIGTERM)", nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return "", fmt.Errorf("kill pid %d: %w", pid, err)
	}
	for range 50 {
		if !alive(pid) {
			return fmt.Sprintf("killed (SIGKILL: still running %v after SIGTERM)", grace), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("pid %d still runs after SIGKILL", pid)
}

// alive reports whether pid runs (a zombie no longer does).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func systemdRunning() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

func systemctl(args ...string) error {
	out, err := exec.Command("systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
