package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Environment variables the lab reads.
const (
	// EnvHelper selects a helper mode when the lab re-executes the current
	// binary inside a host namespace.
	EnvHelper = "UNCLOUD_LAB_HELPER"
	// EnvUncloudBin is the uncloud binary that hosts run. Main sets it
	// after building; set it yourself to test a prebuilt binary.
	EnvUncloudBin = "UNCLOUD_BIN"
)

// UncloudPackage is the import path of the binary's main package.
const UncloudPackage = "github.com/uncloud-mesh/uncloud/cmd/uncloud"

// MainOptions configure Main.
type MainOptions struct {
	// BuildUncloud builds the uncloud binary once for the whole test
	// binary (unless $UNCLOUD_BIN names one).
	BuildUncloud bool
	// Helpers adds helper modes of the package's own, run with
	// Host.RunHelper and Host.StartHelper; names must not clash with the
	// lab's.
	Helpers map[string]HelperFunc
}

// HelperMain runs the helper mode named by $UNCLOUD_LAB_HELPER (the lab's
// own or one in extra) and exits; it returns at once when the variable is
// unset. Commands that use the lab call it first thing in main.
func HelperMain(extra map[string]HelperFunc) {
	mode := os.Getenv(EnvHelper)
	if mode == "" {
		return
	}
	os.Exit(runHelper(mode, os.Args[1:], extra))
}

// Main is TestMain for packages that use the lab: it serves helper modes,
// builds the uncloud binary if asked, runs the tests and exits.
func Main(m *testing.M, opts MainOptions) {
	HelperMain(opts.Helpers)
	if !opts.BuildUncloud || os.Getenv(EnvUncloudBin) != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "uncloud-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab: temp dir for the uncloud binary:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	bin, err := BuildUncloud(ctx, dir)
	cancel()
	if err != nil {
		// Tests still run: those that need the binary fail with this
		// message, the others (the lab's own) are unaffected.
		fmt.Fprintln(os.Stderr, "lab:", err)
		bin = ""
	}
	os.Setenv(EnvUncloudBin, bin)
	os.Setenv(envBuildError, errString(err))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// envBuildError carries a failed build's message to the tests.
const envBuildError = "UNCLOUD_LAB_BUILD_ERROR"

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// BuildUncloud builds the uncloud binary into dir and returns its path.
// CGO_ENABLED=0 as in the release: the binary under test is the static one.
func BuildUncloud(ctx context.Context, dir string) (string, error) {
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "uncloud")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, UncloudPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w:\n%s", UncloudPackage, err, b)
	}
	return out, nil
}

// goTool finds the go command: PATH first, then the usual install places
// (sudo resets PATH to a secure_path that rarely includes Go).
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/local/go/bin/go", "/usr/lib/go/bin/go"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("go command not found in PATH or /usr/local/go/bin")
}

// UncloudBinary returns the binary Main built, or an error explaining why
// there is none.
func UncloudBinary() (string, error) {
	if bin := os.Getenv(EnvUncloudBin); bin != "" {
		return bin, nil
	}
	if msg := os.Getenv(envBuildError); msg != "" {
		return "", fmt.Errorf("no uncloud binary: %s", msg)
	}
	return "", fmt.Errorf("no uncloud binary: set $%s or call lab.Main(m, lab.MainOptions{BuildUncloud: true}) from TestMain", EnvUncloudBin)
}
