package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
)

// Host is one machine: a namespace with eth0 as its only link to the world.
type Host struct {
	Name string // as given to AddHost, e.g. "h1"
	NS   string // namespace name, e.g. "ul00ab3k7-h1"
	// Addr is eth0's address; PublicAddr is where the internet sees the
	// host: Addr itself, or the WAN address of its NAT router.
	Addr       netip.Addr
	PublicAddr netip.Addr
	// Addr6 and PublicAddr6 are the host's IPv6 address on the internet,
	// zero until AddIPv6.
	Addr6       netip.Addr
	PublicAddr6 netip.Addr
	Router      *Router // nil when the host sits directly on the internet
	Dir         string  // this host's directory: configs, state, logs

	lab *Lab
	// The far end of eth0, for netem on the host's inbound direction.
	farNS, farIf string
}

// HostOptions configure a new host.
type HostOptions struct {
	// NAT puts the host on a private LAN behind a new router namespace.
	NAT NATKind
}

var reservedRole = regexp.MustCompile(`^(net|r[0-9]+)$`)

// AddHost creates a host named name (1 to 5 characters of a-z0-9; "net" and
// r<digits> are taken by the lab's own namespaces). It is safe to call from
// several goroutines, which is how AddHosts makes many hosts quickly.
func (l *Lab) AddHost(ctx context.Context, name string, opts HostOptions) (*Host, error) {
	return l.addHost(ctx, name, opts, netip.Addr{})
}

// addHost is AddHost with an internet address allocated beforehand (or
// zero to allocate one now).
func (l *Lab) addHost(ctx context.Context, name string, opts HostOptions, wan netip.Addr) (*Host, error) {
	if err := validRole(name); err != nil {
		return nil, fmt.Errorf("add host: %w", err)
	}
	if reservedRole.MatchString(name) {
		return nil, fmt.Errorf("add host: name %q is reserved for the lab's own namespaces", name)
	}
	h := &Host{Name: name, NS: l.Prefix + "-" + name, lab: l, Dir: filepath.Join(l.Dir, name)}
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("add host %s: %w", name, err)
	}
	if err := h.makePrivateDirs(); err != nil {
		return nil, fmt.Errorf("add host %s: %w", name, err)
	}
	if err := addNetns(ctx, h.NS); err != nil {
		return nil, fmt.Errorf("add host %s: %w", name, err)
	}
	l.trackNS(h.NS)

	var err error
	if opts.NAT == NATNone {
		err = l.plugIntoInternet(ctx, h, wan)
	} else {
		err = l.plugBehindNAT(ctx, h, opts.NAT)
	}
	if err != nil {
		return nil, fmt.Errorf("add host %s: %w", name, err)
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h, nil
}

// AddHosts creates hosts h1..hN directly on the internet, in parallel.
// Addresses are handed out in name order, so in a fresh lab hN is
// 198.18.1.N.
func (l *Lab) AddHosts(ctx context.Context, n int) ([]*Host, error) {
	hosts := make([]*Host, n)
	errs := make([]error, n)
	wans := make([]netip.Addr, n)
	for i := range wans {
		var err error
		if wans[i], err = l.allocWAN(); err != nil {
			return nil, err
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			hosts[i], errs[i] = l.addHost(ctx, fmt.Sprintf("h%d", i+1), HostOptions{}, wans[i])
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return hosts, nil
}

// plugIntoInternet connects eth0 straight to the internet bridge, with
// address addr (zero: the next free one).
func (l *Lab) plugIntoInternet(ctx context.Context, h *Host, addr netip.Addr) error {
	if !addr.IsValid() {
		var err error
		if addr, err = l.allocWAN(); err != nil {
			return err
		}
	}
	h.Addr, h.PublicAddr = addr, addr
	h.farNS, h.farIf = l.internet, "v"+h.Name
	if err := ipBatch(ctx, l.internet,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", h.farIf, h.NS),
		fmt.Sprintf("link set %s master br0 up", h.farIf),
	); err != nil {
		return err
	}
	return ipBatch(ctx, h.NS,
		fmt.Sprintf("addr add %s/16 dev eth0", addr),
		"link set eth0 up",
		"route add default via "+Gateway.String(),
	)
}

// PrivateDirs are the uncloud paths each host has to itself. Namespaces
// split the network, not the file system, so every host would otherwise
// share one /var/lib/uncloud and one /run/uncloud/uncloud.sock. `ip netns
// exec` already runs each command in a private mount namespace (to remount
// /sys), so the lab bind-mounts the host's own directories (Host.Dir/etc,
// lib, run) over these paths there: each host has its own state and socket
// at the default places, without any flag. The empty mount points are
// created on the real file system once.
func PrivateDirs() []string { return []string{"/etc/uncloud", "/var/lib/uncloud", "/run/uncloud"} }

// privateSources are the host directories mounted over PrivateDirs.
func (h *Host) privateSources() []string {
	return []string{filepath.Join(h.Dir, "etc"), filepath.Join(h.Dir, "lib"), filepath.Join(h.Dir, "run")}
}

// makePrivateDirs creates the mount points and the host's directories.
func (h *Host) makePrivateDirs() error {
	for i, target := range PrivateDirs() {
		for _, d := range []string{target, h.privateSources()[i]} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("private directory: %w", err)
			}
		}
	}
	return nil
}

// argv is the command line that runs name inside the host: its network
// namespace, with its private directories mounted.
//
// DOCKER_HOST points at a socket nobody serves: namespaces do not hide the
// machine's own /var/run/docker.sock, and an agent in a lab host must not
// put its networks, rules and container records on the machine's engine.
// A test that gives a host its own engine sets DOCKER_HOST after this
// (e.g. `env DOCKER_HOST=… uncloud …`).
func (h *Host) argv(name string, args ...string) []string {
	const script = `mount --bind "$1" /etc/uncloud && mount --bind "$2" /var/lib/uncloud && ` +
		`mount --bind "$3" /run/uncloud && export DOCKER_HOST="unix://$4" && shift 4 && exec "$@"`
	argv := []string{"netns", "exec", h.NS, "sh", "-c", script, "sh"}
	argv = append(argv, h.privateSources()...)
	argv = append(argv, filepath.Join(h.Dir, "no-docker.sock"))
	return append(append(argv, name), args...)
}

// Command returns a command that runs name inside the host.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", h.argv(name, args...)...)
}

// Run runs a command inside the host and returns its standard output; the
// error carries the command and its standard error.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := run(ctx, "ip", h.argv(name, args...)...)
	if err != nil {
		return out, fmt.Errorf("on %s: %w", h.Name, err)
	}
	return out, nil
}

// Start starts a long-running command inside the host. Its output goes to
// files in the host directory named after label; the lab stops it on Close.
func (h *Host) Start(label, name string, args ...string) (*Process, error) {
	return h.startCmd(label, exec.Command("ip", h.argv(name, args...)...))
}

func (h *Host) startCmd(label string, cmd *exec.Cmd) (*Process, error) {
	p, err := startProcess(cmd, h.Dir, label)
	if err != nil {
		return nil, fmt.Errorf("on %s: %w", h.Name, err)
	}
	p.Name = h.Name + "/" + label
	if err := h.lab.trackProc(p); err != nil {
		_ = p.Stop(0)
		return nil, fmt.Errorf("on %s: start %s: %w", h.Name, label, err)
	}
	return p, nil
}
