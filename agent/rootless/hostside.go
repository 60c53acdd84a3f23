package rootless

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// EnvHostSide carries into the agent inside the namespaces the sockets
// its starter made on the host's network before entering: the proxies'
// listeners and the host-side helper's end of the socketpair
// (hostdial.go). "dial=FD;listen=ADDR@FD;…", descriptors without
// close-on-exec.
const EnvHostSide = "UNCLOUD_ROOTLESS_HOSTSIDE"

// HostSide is what the agent inside holds of the host's network: the
// listeners its starter opened there (by the address asked) and the
// dialer of the host-side helper. Its descriptors outlive the daemon, so
// an upgrade's re-exec can pass them on (Pass).
type HostSide struct {
	listeners map[string]*os.File
	dial      *os.File
	dialer    *HostDialer
}

// TakeHostSide takes the descriptors spec names (EnvHostSide), marking
// them close-on-exec so children do not hold them.
func TakeHostSide(spec string) (*HostSide, error) {
	h := &HostSide{listeners: map[string]*os.File{}}
	if spec == "" {
		return h, nil
	}
	fdOf := func(v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			return 0, fmt.Errorf("%s %q: %q is not a descriptor above the standard streams", EnvHostSide, spec, v)
		}
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
			return 0, fmt.Errorf("%s %q: descriptor %d is not open: %w", EnvHostSide, spec, n, err)
		}
		unix.CloseOnExec(n)
		return n, nil
	}
	for _, part := range strings.Split(spec, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return h, fmt.Errorf("%s %q: %q is not KEY=VALUE", EnvHostSide, spec, part)
		}
		switch k {
		case "dial":
			fd, err := fdOf(v)
			if err != nil {
				return h, err
			}
			h.dial = os.NewFile(uintptr(fd), "host-side helper")
		case "listen":
			addr, fdText, ok := strings.Cut(v, "@")
			if !ok {
				return h, fmt.Errorf("%s %q: %q is not ADDR@FD", EnvHostSide, spec, v)
			}
			fd, err := fdOf(fdText)
			if err != nil {
				return h, err
			}
			h.listeners[addr] = os.NewFile(uintptr(fd), "host listener "+addr)
		default:
			return h, fmt.Errorf("%s %q: unknown key %q", EnvHostSide, spec, k)
		}
	}
	if h.dial != nil {
		c, err := net.FileConn(h.dial)
		if err != nil {
			return h, fmt.Errorf("%s: the host-side helper's socket: %w", EnvHostSide, err)
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return h, fmt.Errorf("%s: the host-side helper's socket is a %T, not a unix socket", EnvHostSide, c)
		}
		h.dialer = NewHostDialer(uc)
	}
	return h, nil
}

// Dialer is the host-side helper's dialer; nil when the starter started
// none.
func (h *HostSide) Dialer() *HostDialer {
	if h == nil {
		return nil
	}
	return h.dialer
}

// Listen is a listener on the host's addr, from the socket the starter
// opened there; an error names why there is none. Each call returns a
// new listener on the same socket.
func (h *HostSide) Listen(addr string) (net.Listener, error) {
	var f *os.File
	if h != nil {
		f = h.listeners[addr]
	}
	if f == nil {
		return nil, fmt.Errorf("no socket on the host's %s: the agent runs inside rootlesskit's network namespace and listens on the host only where the process that started it did (see its log for why it could not)", addr)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the host socket for %s: %w", addr, err)
	}
	return ln, nil
}

// Addrs are the host addresses the agent has listeners for.
func (h *HostSide) Addrs() []string {
	var out []string
	for a := range h.listeners {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Pass duplicates the descriptors without close-on-exec for the process
// that replaces this one (an upgrade's re-exec) and describes them for
// TakeHostSide; "" when there are none.
func (h *HostSide) Pass() (string, error) {
	if h == nil {
		return "", nil
	}
	files := map[string]*os.File{}
	for addr, f := range h.listeners {
		files[addr] = f
	}
	return Handoff(files, h.dial)
}

// Handoff describes listeners (by address) and the helper's socket dial
// (nil for none) for TakeHostSide in a process this one executes:
// duplicates without close-on-exec, which survive the exec.
func Handoff(listeners map[string]*os.File, dial *os.File) (string, error) {
	var parts []string
	// Through SyscallConn, not Fd: Fd would put the socket, shared
	// with the listeners that serve on it now, into blocking mode.
	dup := func(f *os.File) (int, error) {
		rc, err := f.SyscallConn()
		if err != nil {
			return 0, fmt.Errorf("duplicate %s: %w", f.Name(), err)
		}
		n, derr := -1, error(nil)
		if err := rc.Control(func(fd uintptr) { n, derr = unix.Dup(int(fd)) }); err != nil || derr != nil {
			return 0, fmt.Errorf("duplicate %s: %w", f.Name(), errors.Join(err, derr))
		}
		return n, nil
	}
	if dial != nil {
		n, err := dup(dial)
		if err != nil {
			return "", err
		}
		parts = append(parts, "dial="+strconv.Itoa(n))
	}
	addrs := make([]string, 0, len(listeners))
	for a := range listeners {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		if strings.ContainsAny(a, ";@=") {
			return "", fmt.Errorf("listen address %q has one of ;@=", a)
		}
		n, err := dup(listeners[a])
		if err != nil {
			return "", err
		}
		parts = append(parts, "listen="+a+"@"+strconv.Itoa(n))
	}
	return strings.Join(parts, ";"), nil
}
