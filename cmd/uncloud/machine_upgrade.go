package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type machineUpgradeCmd struct {
	Machines []string      `arg:"" optional:"" help:"Machines to upgrade (names or IDs)."`
	All      bool          `help:"Upgrade every machine of the network."`
	Binary   string        `type:"existingfile" help:"The uncloud binary to install (default: this command's own binary)." placeholder:"FILE"`
	Wait     time.Duration `default:"2m" help:"How long each machine may take to be back alive, rejoined and on the new version."`
}

func (machineUpgradeCmd) Help() string {
	return `Replaces the agent binary of machines, one at a time. The binary travels over the mesh to each machine, which checks its SHA-256 and that it runs there (its 'version', for this machine's OS and architecture) before anything changes. The agent then stops, renames the binary over its own (keeping the old one as <binary>.previous) and restarts on it in the same process; containers keep running, Docker owns them.

The next machine starts only once this one is back: alive, seeing the members it saw before, on the new version. A new binary that fails to start or rejoin within a minute puts the old one back and restarts on it; the command then stops and says which machine and why. The machine this command talks through goes last.

Agents of a release without 'machine upgrade' cannot take a binary this way: replace theirs by hand once.

Examples:
  uncloud machine upgrade --all --binary ./uncloud-linux-amd64
  uncloud machine upgrade m2 m3`
}

// upgradePoll is how often a restarting machine is asked whether it is
// back; each ask is bounded by upgradeAsk.
const (
	upgradePoll = 500 * time.Millisecond
	upgradeAsk  = 5 * time.Second
	upgradeSend = 10 * time.Minute
)

func (c machineUpgradeCmd) Run(g *globals) error {
	if c.All == (len(c.Machines) > 0) {
		return errors.New("name the machines to upgrade, or --all")
	}
	bin := c.Binary
	if bin == "" {
		if bin = installedBinary(); bin == "" {
			return errors.New("this uncloud is a 'go run' temporary: give the binary with --binary FILE")
		}
	}
	sum, size, err := fileSHA256(bin)
	if err != nil {
		return err
	}
	v, err := readSelfView(g)
	if err != nil {
		return err
	}
	targets, err := upgradeOrder(v.machines, v.self.MachineID, c.Machines, c.All)
	if err != nil {
		return err
	}
	fmt.Printf("Upgrading %d machine(s) one at a time with %s (%.1f MB, sha256 %s).\n", len(targets), bin, float64(size)/1e6, sum[:16])
	began := time.Now()
	for i, m := range targets {
		if err := c.upgradeOne(g, m, bin, sum, size); err != nil {
			left := len(targets) - i - 1
			return fmt.Errorf("upgrade stopped at %s (%d of %d upgraded, %d not tried): %w", m.Name, i, len(targets), left, err)
		}
	}
	fmt.Printf("All %d machine(s) upgraded in %v.\n", len(targets), time.Since(began).Round(100*time.Millisecond))
	return nil
}

// upgradeOrder is the machines to upgrade: those named (or all), the one
// the CLI talks through last, since the others' binaries travel through it.
// A machine that is down is refused before anything starts.
func upgradeOrder(all []api.MachineInfo, selfID string, names []string, every bool) ([]api.MachineInfo, error) {
	var out []api.MachineInfo
	if every {
		out = slices.Clone(all)
	} else {
		for _, n := range names {
			i := slices.IndexFunc(all, func(m api.MachineInfo) bool { return m.Name == n || m.ID == n })
			if i < 0 {
				return nil, fmt.Errorf("no machine %q in the network", n)
			}
			if !slices.ContainsFunc(out, func(m api.MachineInfo) bool { return m.ID == all[i].ID }) {
				out = append(out, all[i])
			}
		}
	}
	for _, m := range out {
		if m.State != "alive" && m.State != "self" {
			return nil, fmt.Errorf("%s is %s: an upgrade needs it alive (name the other machines, or bring it back first)", m.Name, m.State)
		}
	}
	slices.SortStableFunc(out, func(a, b api.MachineInfo) int {
		switch {
		case a.ID == selfID && b.ID != selfID:
			return 1
		case b.ID == selfID && a.ID != selfID:
			return -1
		}
		return 0
	})
	return out, nil
}

// upgradeOne sends the binary to m and waits until m is back on it.
func (c machineUpgradeCmd) upgradeOne(g *globals, m api.MachineInfo, bin, sum string, size int64) error {
	before, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.UpgradeStatus, error) {
		return a.MachineUpgradeStatus(ctx, m.ID)
	})
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) && se.Status == http.StatusNotFound {
			return fmt.Errorf("its agent (%s) predates 'machine upgrade': replace its binary by hand: %w", m.Version, err)
		}
		return fmt.Errorf("ask its agent how it runs: %w", err)
	}
	fmt.Printf("%s: sending the binary (runs %s now)\n", m.Name, before.Version)
	f, err := os.Open(bin)
	if err != nil {
		return fmt.Errorf("open %s: %w", bin, err)
	}
	defer f.Close()
	res, err := agentCall(g, upgradeSend, func(ctx context.Context, a *api.Client) (api.UpgradeResult, error) {
		return a.UpgradeMachine(ctx, m.ID, sum, size, f)
	})
	if err != nil {
		return fmt.Errorf("the binary was refused, nothing changed there: %w", err)
	}
	fmt.Printf("%s: binary checked (sha256 and 'version' there: %s); restarting %s → %s\n", m.Name, sum[:16], res.From, res.To)
	sent := time.Now()
	st, err := c.waitBack(g, m, before, res.To)
	if err != nil {
		return err
	}
	fmt.Printf("✓ %s: version %s, alive, sees %d other member(s) (back in %v)\n",
		m.Name, st.Version, st.Alive, time.Since(sent).Round(100*time.Millisecond))
	return nil
}

// waitBack waits until m's agent is a new process on version to, seeing
// as many members as before, and the agent the CLI talks to sees m alive
// on that version. A new process on another version is a rollback.
func (c machineUpgradeCmd) waitBack(g *globals, m api.MachineInfo, before api.UpgradeStatus, to string) (api.UpgradeStatus, error) {
	deadline := time.Now().Add(c.Wait)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		type view struct {
			st api.UpgradeStatus
			ms []api.MachineInfo
		}
		v, err := agentCall(g, upgradeAsk, func(ctx context.Context, a *api.Client) (view, error) {
			st, err := a.MachineUpgradeStatus(ctx, m.ID)
			if err != nil {
				return view{}, err
			}
			ms, err := a.Machines(ctx)
			return view{st, ms}, err
		})
		switch {
		case err != nil:
			last = err.Error()
		case v.st.Started.Equal(before.Started):
			last = "the old process still answers"
		case v.st.RolledBack != "" || v.st.Version != to:
			why := v.st.RolledBack
			if why == "" {
				why = "it did not say why"
			}
			return v.st, fmt.Errorf("%s is back on version %s, not %s: the upgrade was rolled back there (%s)", m.Name, v.st.Version, to, why)
		case v.st.Alive < before.Alive:
			last = fmt.Sprintf("on %s, sees %d of the %d members it saw before", to, v.st.Alive, before.Alive)
		default:
			i := slices.IndexFunc(v.ms, func(x api.MachineInfo) bool { return x.ID == m.ID })
			if i >= 0 && (v.ms[i].State == "alive" || v.ms[i].State == "self") && v.ms[i].Version == to {
				return v.st, nil
			}
			last = "on " + to + ", not yet seen alive on it by this command's agent"
		}
		time.Sleep(upgradePoll)
	}
	return api.UpgradeStatus{}, fmt.Errorf("%s was not back alive and rejoined on version %s within %v (last: %s)", m.Name, to, c.Wait, last)
}

// fileSHA256 is the file's SHA-256 (hex) and size.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	if n > api.MaxBinaryBytes {
		return "", 0, fmt.Errorf("%s is %d MiB, more than the %d MiB an agent takes", path, n>>20, api.MaxBinaryBytes>>20)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
