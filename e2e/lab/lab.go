package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Underlay addressing. Everything sits in 198.18.0.0/15 (RFC 2544, reserved
// for benchmarking), so no lab packet can be mistaken for real traffic.
var (
	// InternetPrefix is the "internet" shared by hosts and NAT routers.
	InternetPrefix = netip.MustParsePrefix("198.18.0.0/16")
	// Gateway is the router address on the internet: every host and NAT
	// router routes its default traffic there. It answers nothing beyond
	// ARP, but a packet sent to it crosses the bridge and is counted.
	Gateway = netip.MustParseAddr("198.18.0.1")
)

// Options configure a lab.
type Options struct {
	// Dir holds logs, configs and state directories. Empty means
	// /tmp/<prefix>, which Close removes (short on purpose: unix socket
	// paths in state directories must stay under 108 bytes, and t.TempDir
	// paths can exceed that).
	Dir string
	// Uncloud is the uncloud binary to run; empty means $UNCLOUD_BIN.
	Uncloud string
	// KeepDir keeps a lab-made Dir on Close (to read logs after a failure).
	KeepDir bool
	// Logf, if set, receives progress and the tails of process logs on Close.
	Logf func(format string, args ...any)
}

// Lab is one test's set of namespaces and processes.
type Lab struct {
	Prefix  string // "ul<pid><tag>", shared by all names of this lab
	Dir     string
	Uncloud string

	internet string // namespace holding the bridge
	logf     func(string, ...any)
	ownDir   bool
	keepDir  bool

	mu        sync.Mutex
	hosts     []*Host
	routers   []*Router
	nsList    []string // namespaces to delete, in creation order
	procs     []*Process
	nextWAN   int  // last octets handed out on the internet, from 198.18.1.1
	nextLAN   int  // third octet of the next NAT LAN 198.19.N.0/24
	counters  int  // nftables counter tables made so far
	ipv6      bool // Gateway6 is on the bridge (ensureIPv6)
	closed    bool
	closeOnce sync.Once
	closeErr  error
}

// New sweeps leftovers of dead runs and creates the internet namespace.
// The caller must Close the lab.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("lab needs %s (Debian: apt-get install iproute2 nftables; scripts/test does it): %w", tool, err)
		}
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if swept, err := Sweep(ctx); err != nil {
		logf("lab: sweeping leftovers: %v", err)
	} else if len(swept) > 0 {
		logf("lab: removed %d leftover namespaces of dead runs: %s", len(swept), strings.Join(swept, " "))
	}

	l := &Lab{Uncloud: opts.Uncloud, logf: logf, keepDir: opts.KeepDir}
	if l.Uncloud == "" {
		l.Uncloud = os.Getenv(EnvUncloudBin)
	}
	// The random tag makes names unique within this process; a collision
	// (another lab of ours drew the same tag) shows as "File exists".
	for attempt := 0; ; attempt++ {
		tag, err := randomTag()
		if err != nil {
			l.Close()
			return nil, err
		}
		l.Prefix = labPrefix(os.Getpid(), tag)
		l.internet = l.Prefix + "-net"
		err = addNetns(ctx, l.internet)
		if err == nil {
			break
		}
		if attempt < 20 && strings.Contains(err.Error(), "File exists") {
			continue
		}
		l.Close()
		return nil, fmt.Errorf("create internet namespace: %w", err)
	}
	l.nsList = append(l.nsList, l.internet)
	if opts.Dir != "" {
		l.Dir = opts.Dir
	} else {
		// Named after the prefix so that Sweep can tell whose it is.
		l.Dir, l.ownDir = filepath.Join(labDirParent, l.Prefix), true
		if err := os.Mkdir(l.Dir, 0o700); err != nil {
			l.Close()
			return nil, fmt.Errorf("lab directory: %w", err)
		}
	}
	if err := ipBatch(ctx, l.internet,
		"link add br0 type bridge",
		"addr add "+Gateway.String()+"/16 dev br0",
		"link set br0 up",
	); err != nil {
		l.Close()
		return nil, fmt.Errorf("create internet bridge: %w", err)
	}
	return l, nil
}

// ErrNotRoot is returned by New when the process is not root.
var ErrNotRoot = errors.New("the lab needs root (network namespaces, veth, nftables): run `sudo scripts/test`")

// InternetNS returns the internet namespace's name, e.g. for Counter or to
// run tcpdump on br0.
func (l *Lab) InternetNS() string { return l.internet }

// Hosts returns the hosts in creation order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// allocWAN hands out the next internet address, 198.18.1.1 upwards.
func (l *Lab) allocWAN() (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return netip.Addr{}, errors.New("lab is closed")
	}
	l.nextWAN++
	n := l.nextWAN
	if n > 254*254 {
		return netip.Addr{}, fmt.Errorf("internet is full after %d addresses", n-1)
	}
	return netip.AddrFrom4([4]byte{198, 18, byte(1 + (n-1)/254), byte(1 + (n-1)%254)}), nil
}

// allocLAN hands out the next NAT LAN, 198.19.N.0/24.
func (l *Lab) allocLAN() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextLAN++
	if l.nextLAN > 254 {
		return 0, errors.New("no NAT LAN left in 198.19.0.0/16")
	}
	return l.nextLAN, nil
}

// track registers a namespace or process for Close.
func (l *Lab) trackNS(ns string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nsList = append(l.nsList, ns)
}

func (l *Lab) trackProc(p *Process) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab is closed")
	}
	l.procs = append(l.procs, p)
	return nil
}

// Processes returns the long-running processes started so far.
func (l *Lab) Processes() []*Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Process(nil), l.procs...)
}

// Close stops every process (SIGTERM, then SIGKILL after 3 s), deletes every
// namespace and, if the lab made it, the lab directory. It is safe to call
// more than once; later calls return the first result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		procs := append([]*Process(nil), l.procs...)
		nsList := append([]string(nil), l.nsList...)
		l.mu.Unlock()

		var (
			errs []error
			emu  sync.Mutex
			wg   sync.WaitGroup
		)
		for _, p := range procs {
			wg.Go(func() {
				if err := p.Stop(3 * time.Second); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			})
		}
		wg.Wait()
		// A fresh context: Close runs in cleanups after the test's own
		// context may be gone.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(nsList) - 1; i >= 0; i-- {
			if err := deleteNetns(ctx, nsList[i]); err != nil {
				errs = append(errs, err)
			}
		}
		if l.ownDir && !l.keepDir {
			if err := os.RemoveAll(l.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove lab directory: %w", err))
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}
