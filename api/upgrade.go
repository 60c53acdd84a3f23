package api

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Upgrading an agent's binary: the CLI streams the binary to its agent
// (local API), which keeps it when the target is itself or streams it on
// to the target's machine API. The target checks it (SHA-256, runs on this
// machine), answers, and then restarts on it (cmd/uncloud's re-exec).
const (
	// PathUpgrade (local API, POST, under PathMachines/{name}): the body
	// is the binary; HeaderSHA256 its digest. Answers UpgradeResult.
	PathUpgrade = "/upgrade"
	// PathUpgradeStatus (local API, GET, under PathMachines/{name}):
	// answers UpgradeStatus, asked of that machine.
	PathUpgradeStatus = "/upgrade/status"
	// MachinePathUpgrade (machine API): POST the binary (answers
	// UpgradeResult, then the callee restarts on it); GET answers
	// UpgradeStatus.
	MachinePathUpgrade = "/v1/upgrade"

	// HeaderSHA256 carries the binary's SHA-256 (64 hex digits), sent
	// apart from the body so the receiver can refuse a body that does
	// not match it before anything changes.
	HeaderSHA256 = "X-Uncloud-Sha256"

	// MaxBinaryBytes bounds an uploaded binary (a stripped release binary
	// is about 30 MB, an unstripped test build 45 MB).
	MaxBinaryBytes = 256 << 20
)

// UpgradeResult is a target's answer to an uploaded binary it accepted:
// it restarts on it right after answering.
type UpgradeResult struct {
	Machine string `json:"machine"`
	ID      string `json:"id"`
	From    string `json:"from"` // the version it runs now
	To      string `json:"to"`   // the version the new binary states
}

// UpgradeStatus is what an agent says about its own process, for the
// upgrade driver: which version runs, since when, how many other members
// it sees alive, and whether it is a rolled-back start.
type UpgradeStatus struct {
	Machine string    `json:"machine"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Alive   int       `json:"alive"` // other members alive in gossip
	// RolledBack says why the last upgrade was undone ("" if it was not):
	// this process is the old binary, restored.
	RolledBack string `json:"rolled_back,omitempty"`
}

// UpgradeBackend is the local API's side of upgrades; a Backend that has
// it serves PathUpgrade and PathUpgradeStatus.
type UpgradeBackend interface {
	// UpgradeMachine takes the binary for nameOrID; then, when not nil,
	// is called once the answer has been flushed: it starts the restart,
	// which closes the connection the answer travels on.
	UpgradeMachine(ctx context.Context, nameOrID, sha256 string, size int64, body io.Reader) (res UpgradeResult, then func(), err error)
	MachineUpgradeStatus(ctx context.Context, nameOrID string) (UpgradeStatus, error)
}

// CheckSHA256 refuses a digest that is not 64 hex digits.
func CheckSHA256(sum string) error {
	if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
		return fmt.Errorf("%w: SHA-256 %q is not 64 hex digits", ErrBadRequest, sum)
	}
	return nil
}

// UpgradeMachine streams a binary of size bytes to nameOrID through this
// machine's agent.
func (c *Client) UpgradeMachine(ctx context.Context, nameOrID, sha256 string, size int64, body io.Reader) (UpgradeResult, error) {
	var res UpgradeResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+PathMachines+"/"+nameOrID+PathUpgrade, body)
	if err != nil {
		return res, &CallError{Call: "UpgradeMachine", Target: c.Target, Err: err}
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(HeaderSHA256, sha256)
	resp, err := c.HTTP.Do(req)
	if err == nil {
		err = answerError(resp)
		if err == nil {
			err = decodeAnswer(resp.Body, &res)
		}
		resp.Body.Close()
	}
	if err != nil {
		return res, &CallError{Call: "UpgradeMachine", Target: c.Target, Err: err}
	}
	return res, nil
}

// MachineUpgradeStatus asks nameOrID, through this machine's agent, about
// its agent process.
func (c *Client) MachineUpgradeStatus(ctx context.Context, nameOrID string) (UpgradeStatus, error) {
	var st UpgradeStatus
	err := c.call(ctx, "MachineUpgradeStatus", http.MethodGet, PathMachines+"/"+nameOrID+PathUpgradeStatus, nil, &st)
	return st, err
}

// Upgrade streams a binary of size bytes to machineID.
func (c *MachineClient) Upgrade(ctx context.Context, machineID, sha256 string, size int64, body io.Reader) (UpgradeResult, error) {
	var res UpgradeResult
	resp, err := c.send(ctx, c.Long, "Upgrade", machineID, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+MachinePathUpgrade, body)
		if err == nil {
			req.ContentLength = size
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set(HeaderSHA256, sha256)
		}
		return req, err
	})
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if err := decodeAnswer(resp.Body, &res); err != nil {
		return res, &CallError{Call: "Upgrade", Target: "machine " + machineID, Err: err}
	}
	return res, nil
}

// UpgradeStatus asks machineID about its agent process.
func (c *MachineClient) UpgradeStatus(ctx context.Context, machineID string) (UpgradeStatus, error) {
	var st UpgradeStatus
	err := c.call(ctx, c.HTTP, "UpgradeStatus", machineID, http.MethodGet, MachinePathUpgrade, nil, &st)
	return st, err
}

// upgradeRoutes adds the upgrade paths to mux when b can upgrade.
func upgradeRoutes(mux *http.ServeMux, b Backend) {
	ub, ok := b.(UpgradeBackend)
	if !ok {
		return
	}
	mux.HandleFunc("POST "+PathMachines+"/{name}"+PathUpgrade, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength < 0 || r.ContentLength > MaxBinaryBytes {
			reply(w, nil, fmt.Errorf("%w: a binary needs a Content-Length of at most %d MiB", ErrBadRequest, MaxBinaryBytes>>20))
			return
		}
		res, then, err := ub.UpgradeMachine(r.Context(), r.PathValue("name"), r.Header.Get(HeaderSHA256), r.ContentLength,
			http.MaxBytesReader(w, r.Body, MaxBinaryBytes))
		reply(w, res, err)
		if err == nil && then != nil {
			http.NewResponseController(w).Flush()
			then()
		}
	})
	mux.HandleFunc("GET "+PathMachines+"/{name}"+PathUpgradeStatus, func(w http.ResponseWriter, r *http.Request) {
		st, err := ub.MachineUpgradeStatus(r.Context(), r.PathValue("name"))
		reply(w, st, err)
	})
}

func decodeAnswer(r io.Reader, out any) error {
	if err := json.NewDecoder(io.LimitReader(r, maxMachineAnswer)).Decode(out); err != nil {
		return fmt.Errorf("decode the answer: %w", err)
	}
	return nil
}
