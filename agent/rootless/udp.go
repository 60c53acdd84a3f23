package rootless

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// EnvUDP names the descriptor of the WireGuard socket the starter bound on
// the host's network before entering the namespaces: inside, the agent's
// WireGuard uses it (tun.SocketBind) instead of a socket of its own behind
// slirp4netns's userspace NAT, which halved the mesh's throughput and
// hid the host's real endpoint from NAT traversal.
const EnvUDP = "UNCLOUD_ROOTLESS_UDP_FD"

// OpenHostUDP binds the WireGuard port on all of the host's IPv4
// addresses, as a kernel-mode agent does, and returns the socket as a file
// without close-on-exec (it must survive nsenter's exec and the agent's)
// with the environment entry that names it. Call it before Enter, while
// this process still has the host's network namespace.
func OpenHostUDP(port uint16) (*os.File, string, error) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return nil, "", fmt.Errorf("bind the WireGuard port %d on the host: %w", port, err)
	}
	// File duplicates the descriptor (with close-on-exec); the
	// duplicate is what crosses the exec.
	f, err := uc.File()
	uc.Close()
	if err != nil {
		return nil, "", fmt.Errorf("WireGuard socket on port %d: %w", port, err)
	}
	entry, err := HandOn(f)
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("WireGuard socket on port %d: %w", port, err)
	}
	return f, entry, nil
}

// HandOn lets f survive the next exec (no close-on-exec) and returns the
// environment entry that names it for TakeHostUDP.
func HandOn(f *os.File) (string, error) {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
		return "", fmt.Errorf("clear close-on-exec on %s: %w", f.Name(), err)
	}
	return EnvUDP + "=" + strconv.Itoa(int(f.Fd())), nil
}

// TakeHostUDP takes the socket the starter named in EnvUDP: nil without
// one. It sets close-on-exec again, so that the agent's children (Docker
// helpers, iptables) do not hold the WireGuard port, and unsets the
// variable, so that no later exec names a descriptor it no longer has.
func TakeHostUDP(getenv func(string) string, unsetenv func(string) error) (*os.File, error) {
	v := getenv(EnvUDP)
	if v == "" {
		return nil, nil
	}
	unsetenv(EnvUDP)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q is not a socket descriptor", EnvUDP, v)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("%s=%d: no such descriptor: %w", EnvUDP, fd, err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "host WireGuard socket"), nil
}
