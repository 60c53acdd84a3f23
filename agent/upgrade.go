package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// Agent upgrades, this machine's side: a binary arrives (from the CLI
// through the local API, or from another machine's agent through the
// machine API), is written next to the installed binary, checked, and
// handed to whoever runs the daemon (Upgrades), which stops the daemon,
// swaps the files and re-executes (cmd/uncloud). Nothing is replaced
// here: a refused binary leaves no trace.

// upgrader is the daemon's upgrade state.
type upgrader struct {
	started time.Time
	busy    atomic.Bool // one upload at a time
	ready   chan string // a checked binary's path, for Upgrades
	done    atomic.Bool // a binary was handed over: refuse more
}

func newUpgrader() *upgrader {
	return &upgrader{started: time.Now(), ready: make(chan string, 1)}
}

// Upgrades yields the path of a checked binary to restart on: a temp file
// in the installed binary's directory, which the receiver renames over it.
func (d *Daemon) Upgrades() <-chan string { return d.up.ready }

// versionCheckTimeout bounds running the new binary's `version`.
const versionCheckTimeout = 15 * time.Second

// stageUpgrade writes body to a temp file next to the installed binary
// and checks its digest and that it runs here. The caller answers, then
// calls the returned func, which hands the binary to Upgrades (the
// restart closes the connection: the answer must have gone first).
func (d *Daemon) stageUpgrade(ctx context.Context, sum string, size int64, body io.Reader) (api.UpgradeResult, func(), error) {
	self := d.snapshot()
	res := api.UpgradeResult{Machine: self.Name, ID: self.MachineID, From: d.opts.Version}
	if err := api.CheckSHA256(sum); err != nil {
		return res, nil, err
	}
	if size < 0 || size > api.MaxBinaryBytes {
		return res, nil, fmt.Errorf("%w: binary of %d bytes: at most %d MiB", api.ErrBadRequest, size, api.MaxBinaryBytes>>20)
	}
	if d.opts.Binary == "" {
		return res, nil, fmt.Errorf("%w: %s does not know its own binary's path, so it cannot replace it", api.ErrUnavailable, self.Name)
	}
	if d.up.done.Load() || !d.up.busy.CompareAndSwap(false, true) {
		return res, nil, fmt.Errorf("%w: %s is already upgrading", api.ErrConflict, self.Name)
	}
	defer d.up.busy.Store(false)
	path, to, err := receiveBinary(ctx, d.opts.Binary, sum, size, body)
	if err != nil {
		return res, nil, fmt.Errorf("%w (nothing changed on %s)", err, self.Name)
	}
	res.To = to
	d.up.done.Store(true)
	d.log.Info("upgrade: binary received and checked; restarting on it once answered", "from", res.From, "to", to, "sha256", sum)
	return res, func() { d.up.ready <- path }, nil
}

// receiveBinary writes size bytes of body to a temp file next to
// installed, and keeps it only when its SHA-256 is sum and its `version`
// runs here: it returns the file and the version it states. A refused
// binary leaves no file.
func receiveBinary(ctx context.Context, installed, sum string, size int64, body io.Reader) (_, _ string, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(installed), "."+filepath.Base(installed)+".upgrade-*")
	if err != nil {
		return "", "", fmt.Errorf("temp file next to %s: %w", installed, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(body, size+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	var big *http.MaxBytesError
	switch {
	case errors.As(err, &big):
		return "", "", fmt.Errorf("%w: binary larger than %d MiB", api.ErrBadRequest, api.MaxBinaryBytes>>20)
	case err != nil:
		return "", "", fmt.Errorf("receive the binary into %s: %w", tmp.Name(), err)
	case n != size:
		err = fmt.Errorf("%w: received %d bytes of a binary said to be %d", api.ErrBadRequest, n, size)
		return "", "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(sum) {
		err = fmt.Errorf("%w: the binary's SHA-256 is %s, not the %s sent with it: refused", api.ErrBadRequest, got, sum)
		return "", "", err
	}
	if err = os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", "", fmt.Errorf("make %s executable: %w", tmp.Name(), err)
	}
	to, err := binaryVersion(ctx, tmp.Name())
	if err != nil {
		err = fmt.Errorf("%w: the new binary does not run here: %v", api.ErrBadRequest, err)
		return "", "", err
	}
	return tmp.Name(), to, nil
}

// binaryVersion runs `bin version` and returns its version when it was
// built for this machine's OS and architecture.
func binaryVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionCheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", bin, err)
	}
	return parseVersionLine(string(out), runtime.GOOS+"/"+runtime.GOARCH)
}

// parseVersionLine reads `uncloud VERSION (commit C) OS/ARCH GO` and
// refuses another platform than want.
func parseVersionLine(line, want string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "uncloud" || f[2] != "(commit" {
		return "", fmt.Errorf("not an uncloud version line: %q", strings.TrimSpace(line))
	}
	if f[4] != want {
		return "", fmt.Errorf("built for %s, this machine is %s", f[4], want)
	}
	return f[1], nil
}

// UpgradeMachine implements api.UpgradeBackend: the binary is this
// machine's, or goes on to the machine named.
func (d *Daemon) UpgradeMachine(ctx context.Context, nameOrID, sum string, size int64, body io.Reader) (api.UpgradeResult, func(), error) {
	id, err := d.machineIDOf(ctx, nameOrID)
	if err != nil {
		return api.UpgradeResult{}, nil, err
	}
	if id == d.state.MachineID {
		return d.stageUpgrade(ctx, sum, size, body)
	}
	if err := api.CheckSHA256(sum); err != nil {
		return api.UpgradeResult{}, nil, err
	}
	res, err := d.machineAPI.Upgrade(ctx, id, sum, size, body)
	return res, nil, err
}

// MachineUpgradeStatus implements api.UpgradeBackend.
func (d *Daemon) MachineUpgradeStatus(ctx context.Context, nameOrID string) (api.UpgradeStatus, error) {
	id, err := d.machineIDOf(ctx, nameOrID)
	if err != nil {
		return api.UpgradeStatus{}, err
	}
	if id == d.state.MachineID {
		return d.upgradeStatus(), nil
	}
	return d.machineAPI.UpgradeStatus(ctx, id)
}

func (d *Daemon) upgradeStatus() api.UpgradeStatus {
	return api.UpgradeStatus{Machine: d.snapshot().Name, Version: d.opts.Version, Started: d.up.started,
		Alive: d.AliveMembers(), RolledBack: d.opts.RolledBack}
}

// AliveMembers is how many other machines gossip sees alive.
func (d *Daemon) AliveMembers() int {
	if d.gossip == nil {
		return 0
	}
	n := 0
	for _, m := range d.gossip.Members() {
		if m.Name != d.state.MachineID {
			n++
		}
	}
	return n
}

// machineIDOf resolves a machine name or ID among the machine records.
func (d *Daemon) machineIDOf(ctx context.Context, nameOrID string) (string, error) {
	ms, err := d.machines(ctx)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.ID == nameOrID || m.Name == nameOrID {
			return m.ID, nil
		}
	}
	return "", fmt.Errorf("%w: no machine %q", api.ErrNotFound, nameOrID)
}

// upgradeRoutes serves the machine API's side: another member's agent
// streams a binary (POST), or asks how this process is (GET).
func (d *Daemon) upgradeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.MachinePathUpgrade, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength < 0 || r.ContentLength > api.MaxBinaryBytes {
			http.Error(w, fmt.Sprintf("a binary needs a Content-Length of at most %d MiB", api.MaxBinaryBytes>>20),
				http.StatusRequestEntityTooLarge)
			return
		}
		res, then, err := d.stageUpgrade(r.Context(), r.Header.Get(api.HeaderSHA256), r.ContentLength,
			http.MaxBytesReader(w, r.Body, api.MaxBinaryBytes))
		if err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, api.ErrBadRequest):
				code = http.StatusBadRequest
			case errors.Is(err, api.ErrConflict):
				code = http.StatusConflict
			case errors.Is(err, api.ErrUnavailable):
				code = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), code)
			return
		}
		writeJSON(w, res)
		http.NewResponseController(w).Flush()
		then()
	})
	mux.HandleFunc("GET "+api.MachinePathUpgrade, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.upgradeStatus())
	})
}
