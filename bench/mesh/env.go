package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// environment is what every peer's setup needs: tool paths, the temp dir,
// the options and the pinning.
type environment struct {
	log  *slog.Logger
	opts options
	tmp  string
	pin  pinning

	repo       string // module root, where ./cmd/uncloud is built
	wgVersion  string // golang.zx2c4.com/wireguard version of wgCurrent
	wgCurrent  string // wireguard-go built from the module proxy
	uncloud    string // uncloud binary
	buildErrs  map[string]error
	cpuModel   string
	kernel     string
	offloadLog []string // offload checks, printed with the conditions
}

// debianTools maps each command we need to the Debian package that has it.
var debianTools = map[string]string{
	"iperf3":       "iperf3",
	"ping":         "iputils-ping",
	"ss":           "iproute2",
	"taskset":      "util-linux",
	"ethtool":      "ethtool",
	"wg":           "wireguard-tools",
	"wireguard-go": "wireguard-go",
	"nebula":       "nebula",
	"nebula-cert":  "nebula",
	"rootlesskit":  "rootlesskit",
	"slirp4netns":  "slirp4netns",
	"newuidmap":    "uidmap",
	"setpriv":      "util-linux",
}

// prepare checks tools, installs missing ones with --apt, and builds the
// binaries the selected peers need, before any measurement starts so that
// compiling does not steal CPU from a measurement.
func (e *environment) prepare(ctx context.Context, peers []peer) error {
	e.buildErrs = map[string]error{}
	need := map[string]bool{"iperf3": true, "ping": true, "ss": true, "taskset": true, "ip": true}
	for _, p := range peers {
		for _, t := range p.tools {
			need[t] = true
		}
	}
	var missing []string
	for t := range need {
		if _, err := exec.LookPath(t); err != nil && debianTools[t] != "" {
			missing = append(missing, debianTools[t])
		}
	}
	if len(missing) > 0 {
		if !e.opts.apt {
			e.log.Warn("missing packages; peers needing them will fail (use --apt to install)", "install", "apt-get install -y --no-install-recommends "+strings.Join(missing, " "))
		} else {
			args := append([]string{"apt-get", "install", "-y", "--no-install-recommends"}, missing...)
			if _, err := runCmd(ctx, args...); err != nil {
				return fmt.Errorf("install packages: %w", err)
			}
		}
	}

	if err := e.findRepo(ctx); err != nil {
		return err
	}
	if need[toolWGCurrent] {
		e.buildErrs[toolWGCurrent] = e.buildWGCurrent(ctx)
	}
	if need[toolUncloud] {
		e.buildErrs[toolUncloud] = e.buildUncloud(ctx)
	}
	e.describeMachine()
	return nil
}

// Pseudo-tools for binaries we build rather than install.
const (
	toolWGCurrent = "wg-current-build"
	toolUncloud   = "uncloud-build"
)

func (e *environment) findRepo(ctx context.Context) error {
	out, err := runCmd(ctx, "go", "env", "GOMOD")
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("find the uncloud module (run from the repository): go env GOMOD = %q: %v", gomod, err)
	}
	e.repo = filepath.Dir(gomod)
	return nil
}

// buildWGCurrent installs wireguard-go at the version go.mod pins, from the
// module proxy, into the temp dir: the same code uncloud embeds, run as the
// stock daemon.
func (e *environment) buildWGCurrent(ctx context.Context) error {
	e.wgVersion = e.opts.wgVersion
	if e.wgVersion == "" {
		cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", "golang.zx2c4.com/wireguard")
		cmd.Dir = e.repo
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("read wireguard-go version from %s/go.mod: %w", e.repo, err)
		}
		e.wgVersion = strings.TrimSpace(string(out))
	}
	bin := filepath.Join(e.tmp, "bin")
	e.log.Info("building wireguard-go from the module proxy", "version", e.wgVersion)
	cmd := exec.CommandContext(ctx, "go", "install", "golang.zx2c4.com/wireguard@"+e.wgVersion)
	// Outside the module, so the build cannot touch go.mod or pick up its
	// replace directives.
	cmd.Dir = e.tmp
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install golang.zx2c4.com/wireguard@%s: %w: %s", e.wgVersion, err, tail(string(out), 600))
	}
	e.wgCurrent = filepath.Join(bin, "wireguard")
	return nil
}

func (e *environment) buildUncloud(ctx context.Context) error {
	if e.opts.uncloud != "" {
		e.uncloud = e.opts.uncloud
		return nil
	}
	e.uncloud = filepath.Join(e.tmp, "uncloud")
	e.log.Info("building uncloud", "pkg", "./cmd/uncloud")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", e.uncloud, "./cmd/uncloud")
	cmd.Dir = e.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/uncloud in %s: %w: %s", e.repo, err, tail(string(out), 600))
	}
	return nil
}

func (e *environment) describeMachine() {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
}

// pinning says which CPU each role runs on; -1 means unpinned.
type pinning struct {
	mode             string
	client, server   int
	daemonA, daemonB int
}

func parsePinning(mode string) (pinning, error) {
	n := runtime.NumCPU()
	switch mode {
	case "none":
		return pinning{mode, -1, -1, -1, -1}, nil
	case "iperf", "sides":
		if n < 2 {
			return pinning{"none (1 CPU)", -1, -1, -1, -1}, nil
		}
		if mode == "iperf" {
			return pinning{mode, 0, 1, -1, -1}, nil
		}
		return pinning{mode, 0, 1, 0, 1}, nil
	}
	return pinning{}, fmt.Errorf("--pin %q: want none, iperf or sides", mode)
}
