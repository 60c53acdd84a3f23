package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// RootlessDockerScript is Debian's (docker.io) script that runs dockerd
// under rootlesskit for an unprivileged user.
const RootlessDockerScript = "/usr/share/docker.io/contrib/dockerd-rootless.sh"

// User is an unprivileged account made for one test: a system user (no
// subordinate ids unless asked) with a home of its own, removed with its
// processes and files when the test ends.
type User struct {
	Name     string
	UID, GID int
	Home     string // 0755 directory owned by the user
	// Bin is a copy of the lab's uncloud binary the user may run (the
	// build's own may sit in a directory only root enters).
	Bin string
	// TUN is a character device like /dev/net/tun but mode 0666, as
	// Debian's udev makes it: this sandbox's /dev/net/tun is 0600, and
	// rootless Docker (slirp4netns's tap) and the agent open it as the
	// user. Commands run as the user get it bind-mounted over
	// /dev/net/tun in their own mount namespace; the machine's stays.
	TUN string
}

// NewUser creates an unprivileged user for t. The lab's uncloud binary is
// copied into its home.
func (l *Lab) NewUser(t testing.TB) (*User, error) {
	var b [3]byte
	rand.Read(b[:])
	name := "ucr" + hex.EncodeToString(b[:])
	home, err := os.MkdirTemp("", "uncloud-"+name+"-")
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", home,
		"--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput(); err != nil {
		os.RemoveAll(home)
		return nil, fmt.Errorf("useradd %s: %w: %s", name, err, out)
	}
	u := &User{Name: name, Home: home}
	t.Cleanup(func() { u.remove() })
	pw, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	u.UID, _ = strconv.Atoi(pw.Uid)
	u.GID, _ = strconv.Atoi(pw.Gid)
	if err := os.Chmod(home, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(home, u.UID, u.GID); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(l.Uncloud)
	if err != nil {
		return nil, err
	}
	u.Bin = filepath.Join(home, "uncloud")
	if err := os.WriteFile(u.Bin, bin, 0o755); err != nil {
		return nil, err
	}
	u.TUN = filepath.Join(home, "tun")
	if err := syscall.Mknod(u.TUN, syscall.S_IFCHR|0o666, int(unixMkdev(10, 200))); err != nil {
		return nil, fmt.Errorf("mknod %s: %w", u.TUN, err)
	}
	if err := os.Chmod(u.TUN, 0o666); err != nil { // past the umask
		return nil, err
	}
	// The user's runtime dir, as pam_systemd would make /run/user/UID.
	if err := os.Mkdir(u.RuntimeDir(), 0o700); err != nil {
		return nil, err
	}
	return u, os.Chown(u.RuntimeDir(), u.UID, u.GID)
}

func unixMkdev(major, minor uint32) uint64 {
	return uint64(major)<<8 | uint64(minor&0xff) | uint64(minor&^0xff)<<12
}

// RuntimeDir is the user's XDG_RUNTIME_DIR.
func (u *User) RuntimeDir() string { return filepath.Join(u.Home, "run") }

// DockerHost is where the user's rootless dockerd serves.
func (u *User) DockerHost() string { return "unix://" + filepath.Join(u.RuntimeDir(), "docker.sock") }

// AddSubIDs gives the user 65536 subordinate uids and gids, which rootless
// Docker maps its containers' users to.
func (u *User) AddSubIDs() error {
	first := 1_000_000 + (u.UID%1000)*65536 // apart from useradd's ranges
	r := fmt.Sprintf("%d-%d", first, first+65535)
	if out, err := exec.Command("usermod", "--add-subuids", r, "--add-subgids", r, u.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("usermod --add-subuids %s %s: %w: %s", r, u.Name, err, out)
	}
	return nil
}

// argv runs name as the user inside h, with the 0666 TUN device and a
// clean environment a login would give (HOME, PATH, XDG_RUNTIME_DIR,
// DOCKER_HOST at the user's rootless engine) plus env.
func (u *User) argv(env []string, name string, args ...string) []string {
	const script = `mount --bind "$1" /dev/net/tun && shift && exec "$@"`
	argv := []string{"sh", "-c", script, "sh", u.TUN,
		"setpriv", "--reuid=" + strconv.Itoa(u.UID), "--regid=" + strconv.Itoa(u.GID), "--init-groups", "--inh-caps=-all",
		"env", "-i", "HOME=" + u.Home, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"XDG_RUNTIME_DIR=" + u.RuntimeDir(), "DOCKER_HOST=" + u.DockerHost()}
	argv = append(argv, env...)
	return append(append(argv, name), args...)
}

// StartAs starts a long-running command as u inside h.
func (h *Host) StartAs(u *User, label string, env []string, name string, args ...string) (*Process, error) {
	argv := u.argv(env, name, args...)
	return h.Start(label, argv[0], argv[1:]...)
}

// RunAs runs a command as u inside h and returns its combined output.
func (h *Host) RunAs(ctx context.Context, u *User, name string, args ...string) (string, error) {
	argv := u.argv(nil, name, args...)
	out, err := h.Command(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("on %s as %s: %s %s: %w", h.Name, u.Name, name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// RootlessDocker is a user's rootless Docker Engine in a lab host: Debian's
// dockerd-rootless.sh, so rootlesskit's user, mount and network
// namespaces and slirp4netns's NAT to the host's network are the real ones.
type RootlessDocker struct {
	User    *User
	Process *Process
	Client  *client.Client
}

// StartRootlessDocker starts u's rootless dockerd in h and waits until it
// answers. The user needs subordinate ids (AddSubIDs).
func (h *Host) StartRootlessDocker(ctx context.Context, u *User) (*RootlessDocker, error) {
	// nsenter, not ip netns exec: that remounts /sys, hiding the cgroup
	// mounts runc looks for (as in StartDocker); unshare gives the TUN
	// bind mount a mount namespace of its own.
	argv := u.argv(nil, RootlessDockerScript)
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.NS, "unshare", "-m", "--propagation", "private"}, argv...)...)
	p, err := h.startCmd("dockerd-rootless", cmd)
	if err != nil {
		return nil, err
	}
	d := &RootlessDocker{User: u, Process: p}
	d.Client, err = client.NewClientWithOpts(client.WithHost(u.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		d.Close()
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := d.Client.Ping(pctx)
		cancel()
		if err == nil {
			return d, nil
		}
		if !p.Alive() || time.Now().After(deadline) || ctx.Err() != nil {
			log := p.Log()
			if len(log) > 3000 {
				log = log[len(log)-3000:]
			}
			d.Close()
			return nil, fmt.Errorf("rootless dockerd of %s on %s not ready: %w\n%s", u.Name, h.Name, err, log)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Close stops the engine (rootlesskit takes slirp4netns and dockerd with
// it); the user's removal ends whatever is left.
func (d *RootlessDocker) Close() {
	if d.Client != nil {
		d.Client.Close()
	}
	d.Process.Stop(20 * time.Second)
}

// remove ends the user's processes (found by uid in /proc, each by its
// PID), deletes the account and its home.
func (u *User) remove() {
	for range 3 {
		pids := u.pids()
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	exec.Command("userdel", u.Name).Run()
	os.RemoveAll(u.Home)
}

// pids are the processes whose real uid is the user's.
func (u *User) pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name()), &st) == nil && int(st.Uid) == u.UID {
			out = append(out, pid)
		}
	}
	return out
}
