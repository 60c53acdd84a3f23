package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/tun"
)

// adversaryJoinHelpers are the lab helper modes of TestAdversaryJoins.
var adversaryJoinHelpers = map[string]lab.HelperFunc{
	"joinflood": helperJoinFlood,
}

// floodResult is one join call of the flood: the HTTP status (0 when no
// answer came) and what the issuer said.
type floodResult struct {
	Status  int    `json:"status"`
	Message string `json:"message,omitempty"`
	Subnet  int    `json:"subnet,omitempty"`
}

// helperJoinFlood holds a token's secret and fires -n join calls with it
// at once, each for a different would-be machine, through one temporary
// WireGuard device (as an attacker with the token would: every joiner
// with one token shares its key). It prints the results as JSON.
func helperJoinFlood(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("joinflood", flag.ContinueOnError)
	text := fs.String("token", "", "join token")
	n := fs.Int("n", 1, "concurrent joins")
	port := fs.Int("port", 51899, "WireGuard port of the temporary device")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok, err := membership.ParseToken(*text, time.Now())
	if err != nil {
		return err
	}
	issuer := tok.Members[0]
	dev, err := tun.Open(ctx, tun.Config{PrivateKey: tok.Secret, Address: tok.JoinAddress(), ListenPort: uint16(*port),
		Userspace: true, Joining: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer dev.Close()
	if err := dev.SetPeer(tun.Peer{PublicKey: issuer.WireGuardKey, Endpoint: issuer.Endpoints[0],
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(issuer.Subnet.MachineAddr(), 32)}}); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dev.DialContext, DisableKeepAlives: true}}
	target := net.JoinHostPort(issuer.Subnet.MachineAddr().String(), strconv.Itoa(tun.DefaultJoinPort))
	type joinRequest struct { // the join call's body, as membership sends it
		NetworkID    string  `json:"network_id"`
		MachineID    string  `json:"machine_id"`
		Name         string  `json:"name"`
		WireGuardKey tun.Key `json:"wireguard_key"`
		IdentityKey  string  `json:"identity_key"`
	}
	results := make([]floodResult, *n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range *n {
		wg.Go(func() {
			wgKey, _ := tun.GeneratePrivateKey()
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			id := make([]byte, 8)
			rand.Read(id)
			req := joinRequest{NetworkID: tok.NetworkID, MachineID: hex.EncodeToString(id), Name: fmt.Sprintf("flood%d", i),
				WireGuardKey: wgKey.PublicKey(), IdentityKey: api.EncodeKey(pub)}
			<-start
			callCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			var resp struct {
				Subnet int `json:"subnet"`
			}
			err := api.Join(callCtx, client, target, req, &resp)
			var refused *api.JoinRefusedError
			switch {
			case err == nil:
				results[i] = floodResult{Status: http.StatusOK, Subnet: resp.Subnet}
			case errors.As(err, &refused):
				results[i] = floodResult{Status: refused.Status, Message: refused.Message}
			default:
				results[i] = floodResult{Message: err.Error()}
			}
		})
	}
	close(start)
	wg.Wait()
	return json.NewEncoder(stdout).Encode(results)
}

// promisesOf reads the subnet promises a machine keeps on disk.
func promisesOf(ctx context.Context, t *testing.T, h *lab.Host) map[string]string {
	t.Helper()
	out, err := h.Run(ctx, "cat", "/var/lib/uncloud/subnet-promises.json")
	if err != nil {
		return map[string]string{} // no promise made yet
	}
	var book struct {
		Promises map[string]struct {
			MachineID string `json:"machine_id"`
		} `json:"promises"`
	}
	if err := json.Unmarshal([]byte(out), &book); err != nil {
		t.Fatalf("promises on %s: %v\n%s", h.Name, err, out)
	}
	out2 := map[string]string{}
	for n, p := range book.Promises {
		out2[n] = p.MachineID
	}
	return out2
}

// timedJoin runs `uncloud join` on h with tok and returns how long it took
// to give up, and its error as the CLI printed it (the command line, with
// the token, left out).
func timedJoin(ctx context.Context, f *formed, h *lab.Host, name, tok string) (time.Duration, error) {
	start := time.Now()
	_, err := h.Run(ctx, f.lab.Uncloud, "join", "--name", name, "--foreground", tok)
	took := time.Since(start)
	if err != nil {
		msg := err.Error()
		if i := strings.LastIndex(msg, "uncloud: "); i >= 0 {
			msg = msg[i:]
		}
		err = errors.New(msg)
	}
	return took, err
}

// cliError is the CLI's own message in a failed h.Run.
func cliError(err error) string {
	if err == nil {
		return "<nil>"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, "uncloud: "); i >= 0 {
		msg = msg[i:]
	}
	return msg
}

// TestAdversaryJoins attacks the join path with a token's secret in hand:
// a flood of concurrent joins with one single-use token (exactly one gets
// in, no subnet is promised for the others), a used token and a revoked
// token (each refused as such within 2 s), while a legitimate join keeps
// working; and a machine behind a NAT, asked for a token, says at once
// that it cannot be reached and names a member that can.
func TestAdversaryJoins(t *testing.T) {
	ctx := context.Background()
	l := lab.Start(t)
	f := &formed{lab: l, procs: make([]*lab.Process, 4)}
	for _, name := range []string{"m1", "m2", "m3"} {
		f.hosts = append(f.hosts, l.MustHost(t, name, lab.HostOptions{}))
	}
	f.addNATHost(ctx, t, "nat", lab.NATEndpointIndependent, false)
	adv := l.MustHost(t, "adv", lab.HostOptions{})
	newcomer := l.MustHost(t, "new", lab.HostOptions{})

	f.startAgent(ctx, t, 0, "init", "--name", "m1", "--foreground")
	for i := 1; i < 4; i++ {
		f.startAgent(ctx, t, i, "join", "--name", f.hosts[i].Name, "--foreground", f.token(ctx, t, 0))
	}
	f.waitAllAlive(ctx, t, 60*time.Second)
	var tally attackTally
	members := map[string]bool{}
	for _, m := range f.machines(ctx, t, 0) {
		members[m.ID] = true
	}

	t.Run("flood: 40 concurrent joins with one single-use token, one gets in, no subnet leaks", func(t *testing.T) {
		tok := f.token(ctx, t, 0)
		const n = 40
		start := time.Now()
		out, err := adv.RunHelper(ctx, "joinflood", "-token", tok, "-n", strconv.Itoa(n))
		if err != nil {
			t.Fatalf("flood: %v\n%s", err, out)
		}
		var results []floodResult
		if err := json.Unmarshal([]byte(out), &results); err != nil {
			t.Fatalf("flood results: %v\n%s", err, out)
		}
		byStatus := map[int]int{}
		for _, r := range results {
			byStatus[r.Status]++
			if r.Status != http.StatusOK && r.Status != http.StatusConflict && r.Status != http.StatusGone {
				t.Errorf("a flood join got %d %q, want 409 in progress or 410 used", r.Status, r.Message)
			}
			if r.Status == http.StatusConflict && !strings.Contains(r.Message, "a join with this token is in progress") {
				t.Errorf("409 says %q", r.Message)
			}
		}
		t.Logf("FIGURE flood of %d joins with one single-use token: %v in %v", n, byStatus, time.Since(start).Round(time.Millisecond))
		if byStatus[http.StatusOK] != 1 {
			t.Errorf("%d of %d joins with a single-use token got in, want exactly 1", byStatus[http.StatusOK], n)
		}
		for i := 0; i < n-1; i++ {
			tally.try(t, "join with a spent single-use token", i < byStatus[http.StatusOK]-1, "")
		}
		// Promises for machines that are not members: the one admitted
		// (it never came up) at most, on every machine.
		for _, h := range f.hosts[:3] {
			leaked := 0
			for _, id := range promisesOf(ctx, t, h) {
				if !members[id] {
					leaked++
				}
			}
			t.Logf("FIGURE %s holds %d promises for machines that are not members after the flood", h.Name, leaked)
			tally.try(t, fmt.Sprintf("subnets promised on %s for refused joins", h.Name), leaked > 1, "")
		}

		took, err := timedJoin(ctx, f, newcomer, "late", tok)
		t.Logf("FIGURE a used token refused in %v: %v", took.Round(time.Millisecond), err)
		tally.try(t, "join with a used token", err == nil, "")
		if err == nil || !strings.Contains(err.Error(), "has been used") || took > 2*time.Second {
			t.Errorf("join with a used token: %v after %v, want 'has been used' within 2 s", err, took)
		}
	})

	t.Run("a revoked token is refused as such within 2 s", func(t *testing.T) {
		tok := f.token(ctx, t, 0)
		parsed, err := membership.ParseToken(tok, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if out, err := f.uncloud(ctx, t, 0, "token", "rm", parsed.ID); err != nil {
			t.Fatalf("token rm: %v\n%s", err, out)
		}
		took, err := timedJoin(ctx, f, newcomer, "late", tok)
		t.Logf("FIGURE a revoked token refused in %v: %v", took.Round(time.Millisecond), err)
		tally.try(t, "join with a revoked token", err == nil, "")
		if err == nil || !strings.Contains(err.Error(), "was revoked") || took > 2*time.Second {
			t.Errorf("join with a revoked token: %v after %v, want 'was revoked' within 2 s", err, took)
		}
	})

	t.Run("a machine behind a NAT refuses a token at once and names a reachable member", func(t *testing.T) {
		testkit.Eventually(t, "the NAT'd machine classified its NAT", 60*time.Second, func() error {
			st, err := f.mesh(ctx, t, 3)
			if err != nil {
				return err
			}
			if st.NAT != "endpoint-independent" {
				return fmt.Errorf("NAT %q", st.NAT)
			}
			return nil
		})
		start := time.Now()
		out, err := f.uncloud(ctx, t, 3, "token")
		took := time.Since(start)
		t.Logf("FIGURE token on a machine behind a NAT answered in %v: %s", took.Round(time.Millisecond), cliError(err))
		if err == nil || !strings.Contains(err.Error(), "behind a NAT") || !strings.Contains(err.Error(), "m1 (") || took > 2*time.Second {
			t.Errorf("token behind a NAT = %q, %v after %v; want a refusal naming m1 within 2 s", out, err, took)
		}
	})

	t.Run("a legitimate join still works", func(t *testing.T) {
		tok := f.token(ctx, t, 0)
		f.hosts = append(f.hosts, newcomer)
		f.procs = append(f.procs, nil)
		f.startAgent(ctx, t, len(f.hosts)-1, "join", "--name", "new", "--foreground", tok)
		f.waitAllAlive(ctx, t, 60*time.Second)
		subnets := map[string]bool{}
		for _, m := range f.machines(ctx, t, 0) {
			if subnets[m.Subnet] {
				t.Fatalf("subnet %s given twice", m.Subnet)
			}
			subnets[m.Subnet] = true
		}
	})

	tally.report(t, "joins")
}
