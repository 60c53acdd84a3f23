package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// Binaries the upgrade tests install, built once per test binary.
const (
	upgradeVersion = "e2e-upgrade-2"
	badVersion     = "e2e-upgrade-bad"
)

// variantBuilds builds the uncloud variants the upgrade tests install:
// the same code stamped with another version, and a fault-injected build
// whose agent fails at startup (-X main.failStartup) while its `version`
// still runs, so it passes the upload's checks.
type variantBuilds struct {
	once     sync.Once
	dir      string
	good     string
	bad      string
	buildErr error
}

var variants variantBuilds

func (v *variantBuilds) get() (good, bad string, err error) {
	v.once.Do(func() {
		v.dir, v.buildErr = os.MkdirTemp("", "uncloud-variants-")
		if v.buildErr != nil {
			return
		}
		v.good = filepath.Join(v.dir, "uncloud-good")
		v.bad = filepath.Join(v.dir, "uncloud-bad")
		if v.buildErr = buildUncloud(v.good, "", "-X main.version="+upgradeVersion); v.buildErr != nil {
			return
		}
		v.buildErr = buildUncloud(v.bad, "", "-X main.version="+badVersion+" -X main.failStartup=e2e-fault-injection")
	})
	return v.good, v.bad, v.buildErr
}

// buildUncloud builds ./cmd/uncloud of the module in dir ("" for this
// one) with ldflags into out.
func buildUncloud(out, dir, ldflags string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pkg := lab.UncloudPackage
	if dir != "" {
		pkg = "./cmd/uncloud"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (%s) in %q: %w\n%s", pkg, ldflags, dir, err, b)
	}
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// probeCounts counts a probe's ok and failed lines in out, and the
// slowest answer (the "Nms" that ends an ok answer, which may span lines).
func probeCounts(out string) (ok, failed int, slowest time.Duration, fails []string) {
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "ok "):
			ok++
		case strings.HasPrefix(l, "fail "):
			failed++
			fails = append(fails, l)
		}
		if f := strings.Fields(l); len(f) > 0 && strings.HasSuffix(f[len(f)-1], "ms") {
			if d, err := time.ParseDuration(f[len(f)-1]); err == nil && d > slowest {
				slowest = d
			}
		}
	}
	return ok, failed, slowest, fails
}
