package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/trust"
)

// e2eHelpers are every lab helper mode of this package.
func e2eHelpers() map[string]lab.HelperFunc {
	h := maps.Clone(ingressHelpers)
	maps.Copy(h, adversaryJoinHelpers)
	h["rogue-call"] = helperRogueCall
	h["httpget"] = helperHTTPGet // metrics_test.go
	return h
}

// tally counts the attempts of an adversarial test and those that got
// through; Report logs the one summary line and fails on any.
type attackTally struct {
	mu       sync.Mutex
	attempts int
	through  []string
}

// attempt records one attack; err is nil when the attack was stopped.
func (a *attackTally) attempt(t *testing.T, what string, err error) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts++
	if err != nil {
		a.through = append(a.through, what+": "+err.Error())
		t.Errorf("attack got through: %s: %v", what, err)
		return
	}
	t.Logf("attack stopped: %s", what)
}

// try records one attack that got through when through is set; detail
// says what was observed either way.
func (a *attackTally) try(t *testing.T, what string, through bool, detail string) {
	t.Helper()
	var err error
	if through {
		err = errors.New(detail)
	}
	if !through && detail != "" {
		what += ": " + detail
	}
	a.attempt(t, what, err)
}

// report logs the area's one summary line (tests grep for it) and fails
// the test if any attack got through.
func (a *attackTally) report(t *testing.T, area string) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	t.Logf("ADVERSARY area=%s attempts=%d through=%d", area, a.attempts, len(a.through))
	if len(a.through) > 0 {
		t.Errorf("%d of %d attacks got through", len(a.through), a.attempts)
	}
}

// rogueCallResult is what helperRogueCall prints.
type rogueCallResult struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

// helperRogueCall calls another machine's API with the identity of the
// machine it runs on (read from its data dir), as a member gone rogue
// would: -addr host:port, -key the callee's identity key, -method,
// -path, -body. It always exits 0; a failed call is an answer.
func helperRogueCall(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rogue-call", flag.ContinueOnError)
	addr := fs.String("addr", "", "machine API host:port")
	key := fs.String("key", "", "callee's identity key")
	method := fs.String("method", "GET", "HTTP method")
	path := fs.String("path", "", "path")
	body := fs.String("body", "", "request body")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res := rogueCallResult{}
	defer func() { json.NewEncoder(stdout).Encode(res) }()
	st, err := membership.LoadMachineState(membership.DefaultDataDir)
	if err != nil {
		res.Error = err.Error()
		return nil
	}
	id, err := api.NewIdentity(st.IdentitySeed)
	if err != nil {
		res.Error = err.Error()
		return nil
	}
	pub, err := api.DecodeKey(*key)
	if err != nil {
		res.Error = err.Error()
		return nil
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		TLSClientConfig: api.ClientTLS(id, pub), DialContext: (&net.Dialer{Timeout: *timeout}).DialContext}}
	req, err := http.NewRequestWithContext(ctx, *method, "https://"+*addr+*path, strings.NewReader(*body))
	if err != nil {
		res.Error = err.Error()
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		res.Error = err.Error()
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	res.Status, res.Body = resp.StatusCode, string(b)
	return nil
}

// rogueCall runs helperRogueCall on h.
func rogueCall(ctx context.Context, t *testing.T, h *lab.Host, addr, key, method, path, body string) rogueCallResult {
	t.Helper()
	return rogueCallWithin(ctx, t, h, 3*time.Second, addr, key, method, path, body)
}

func rogueCallWithin(ctx context.Context, t *testing.T, h *lab.Host, timeout time.Duration, addr, key, method, path, body string) rogueCallResult {
	t.Helper()
	out, err := h.RunHelper(ctx, "rogue-call", "-timeout", timeout.String(), "-addr", addr, "-key", key, "-method", method, "-path", path, "-body", body)
	if err != nil {
		t.Fatal(err)
	}
	var res rogueCallResult
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("rogue-call output %q: %v", out, err)
	}
	return res
}

// putRaw writes a stored record as given through h's local API (the agent
// must run with UNCLOUD_TEST_RAW_WRITES=1).
func putRaw(ctx context.Context, h *lab.Host, key string, raw []byte) error {
	sock := filepath.Join(h.Dir, "run", filepath.Base(api.DefaultSocket))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	body, err := json.Marshal(api.SignedRecord{Key: key, Raw: raw})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://local"+api.PathStateRaw, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("raw put %s: %s: %s", key, resp.Status, b)
	}
	return nil
}

// hostState reads the machine state of a lab host from its data dir.
func hostState(t *testing.T, h *lab.Host) *membership.MachineState {
	t.Helper()
	st, err := membership.LoadMachineState(filepath.Join(h.Dir, "lib"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// hostSigner signs records as the machine of a lab host, as its agent
// would: for tests that write a stopped machine's state directly.
func hostSigner(t *testing.T, h *lab.Host) *trust.Signer {
	t.Helper()
	st := hostState(t, h)
	return trust.NewSigner(st.MachineID, ed25519.NewKeyFromSeed(st.IdentitySeed))
}
