package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/uncloud-mesh/uncloud/api"
)

// How the CLI reaches an agent: --connect (or UNCLOUD_CONNECT) when given;
// else a context's machines, the first that answers; else the local socket.

// probeTimeout bounds finding out whether one machine of a context answers:
// the SSH dial and handshake and one Status call.
const probeTimeout = 10 * time.Second

// learnEvery is how often at most a context's learned machines are asked
// again of the network.
const learnEvery = 10 * time.Minute

// learnTimeout bounds that question; learning is a side errand of the
// user's command, never a reason for it to fail.
const learnTimeout = 5 * time.Second

// client connects to the agent the command line names (see above); every
// command that talks to an agent goes through here.
func (g *globals) client() (*api.Client, error) {
	if g.Connect != "" {
		return api.NewClient(g.Connect, api.SSHOptions{})
	}
	store := g.contexts
	if store == nil {
		s, err := userContextStore()
		if err != nil {
			if g.Context == "" {
				return api.NewClient("", api.SSHOptions{}) // no config dir: no contexts
			}
			return nil, err
		}
		store = &s
	}
	name := g.Context
	f, err := store.load()
	if err != nil {
		if name == "" && errors.Is(err, fs.ErrPermission) {
			// Another user's config directory (HOME kept by sudo -u or
			// setpriv): no context was asked for, and none can be this
			// user's, so the local socket, as without contexts.
			return api.NewClient("", api.SSHOptions{})
		}
		return nil, err
	}
	if name == "" {
		name = f.Current
	}
	if name == "" {
		return api.NewClient("", api.SSHOptions{})
	}
	entry := f.find(name)
	if entry == nil {
		return nil, fmt.Errorf("no context %q (see 'uncloud context ls')", name)
	}
	ctx := context.Background()
	stderr := cmp.Or[io.Writer](g.Stderr, os.Stderr)
	probe := cmp.Or(g.probeTimeout, probeTimeout)
	client, via, network, err := firstAnswering(ctx, *entry, probe, stderr)
	if err != nil {
		return nil, err
	}
	if entry.NetworkID == "" && network != "" {
		// The first answer pins the context to its network.
		err := store.update(func(f *contextFile) error {
			if e := f.find(entry.Name); e != nil && e.NetworkID == "" {
				e.NetworkID = network
			}
			return nil
		})
		if err != nil && g.Logger != nil {
			g.Logger.Debug("context: keeping its network", "context", entry.Name, "err", err)
		}
	}
	if time.Since(entry.LearnedAt) >= learnEvery {
		if err := learn(ctx, *store, entry.Name, client, via.Target); err != nil && g.Logger != nil {
			g.Logger.Debug("context: learning the network's machines", "context", entry.Name, "err", err)
		}
	}
	return client, nil
}

// firstAnswering returns a client of the first of the context's machines
// whose agent answers a Status call within probe each, with the network
// it said it is in. A machine that does not answer (refused, no socket,
// SSH dial or handshake failure, no answer in time) is named in one line
// on say and the next is tried; so is one of another network than the
// context's (an address now someone else's). An agent that answers with
// an error has answered, and is used.
func firstAnswering(ctx context.Context, c contextEntry, probe time.Duration, say io.Writer) (*api.Client, contextTry, string, error) {
	tries := c.tries()
	var failed []string
	for i, t := range tries {
		client, err := api.NewClient(t.Target, api.SSHOptions{})
		var reason string
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, probe)
			st, err := client.Status(pctx)
			cancel()
			var answered *api.StatusError
			switch {
			case err == nil && c.NetworkID != "" && st.NetworkID != "" && st.NetworkID != c.NetworkID:
				reason = fmt.Sprintf("is in network %s, not this context's %s (if the network was made anew, add the context again)", st.NetworkID, c.NetworkID)
			case err == nil:
				return client, t, st.NetworkID, nil
			case errors.As(err, &answered):
				return client, t, "", nil
			default:
				reason = "did not answer: " + missReason(err, probe)
			}
			client.Close()
		} else {
			reason = "did not answer: " + missReason(err, probe)
		}
		failed = append(failed, t.String()+": "+reason)
		if i+1 < len(tries) {
			fmt.Fprintf(say, "%s %s; trying %s\n", t, reason, tries[i+1])
		}
	}
	return nil, contextTry{}, "", fmt.Errorf("context %s: no machine answered:\n  %s", c.Name, strings.Join(failed, "\n  "))
}

// missReason is why a machine did not answer, short enough for one line:
// the target is named beside it already.
func missReason(err error, probe time.Duration) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", probe)
	}
	var ue *url.Error // Status on TARGET: Get "http://uncloud/…": …
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var key *knownhosts.KeyError
	if errors.As(err, &key) {
		if len(key.Want) == 0 {
			// A learned machine the user never reached with ssh(1).
			return "its host key is not in known_hosts (connect once with ssh(1) to check and add it)"
		}
		return "its host key differs from the one in known_hosts (a changed or impostor host: check before trusting it)"
	}
	var op *net.OpError
	if errors.As(err, &op) && (op.Op == "dial" || !strings.HasPrefix(err.Error(), "ssh")) {
		return oneLine(op.Err) // "connect: connection refused"; an SSH handshake's own words stay
	}
	return oneLine(err)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// learn asks the answering agent for the network's machines and keeps, as
// the context's learned targets, how to reach the others over SSH the way
// via reaches this one.
func learn(ctx context.Context, store contextStore, name string, client *api.Client, via string) error {
	if !strings.HasPrefix(via, "ssh://") {
		// A socket on this machine says nothing about how to reach the
		// others; note the attempt so it is not made on every command.
		return store.update(func(f *contextFile) error {
			if e := f.find(name); e != nil {
				e.LearnedAt = time.Now()
			}
			return nil
		})
	}
	ctx, cancel := context.WithTimeout(ctx, learnTimeout)
	defer cancel()
	ms, err := client.Machines(ctx)
	var learned []learnedTarget
	if err == nil {
		learned, err = learnedTargets(via, "", ms)
	}
	if err != nil {
		// Keep what was learned, and do not ask again (and wait
		// learnTimeout again) on the very next command.
		if uerr := store.update(func(f *contextFile) error {
			if e := f.find(name); e != nil {
				e.LearnedAt = time.Now()
			}
			return nil
		}); uerr != nil {
			return errors.Join(err, uerr)
		}
		return err
	}
	return store.update(func(f *contextFile) error {
		e := f.find(name)
		if e == nil {
			return nil // removed meanwhile
		}
		e.Learned, e.LearnedAt = learned, time.Now()
		return nil
	})
}

// learnedTargets derives an SSH target for each other machine of ms from
// via, the target that reached the agent that listed them: the same user,
// port and socket, at the address the machine's WireGuard endpoint shows.
// That is its underlay address, which SSH can reach from where the user
// is when the machines reach each other directly (a relayed machine, or
// one not heard from, has no such address and is left out); mesh
// addresses are left out, since the user is not on the mesh (else the
// local socket would do). Machines that are up come first.
func learnedTargets(via, sshConfig string, ms []api.MachineInfo) ([]learnedTarget, error) {
	u, err := url.Parse(via)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", via, err)
	}
	r, err := api.ResolveSSH(via, sshConfig)
	if err != nil {
		return nil, err
	}
	var mesh []netip.Prefix
	for _, m := range ms {
		if p, err := netip.ParsePrefix(m.Subnet); err == nil {
			mesh = append(mesh, p)
		}
	}
	slices.SortStableFunc(ms, func(a, b api.MachineInfo) int {
		return cmp.Or(cmp.Compare(downRank(a.State), downRank(b.State)), cmp.Compare(a.Name, b.Name))
	})
	var out []learnedTarget
	seen := map[string]bool{}
	for _, m := range ms {
		if m.State == "self" {
			continue
		}
		host, _, err := net.SplitHostPort(m.Endpoint)
		if err != nil {
			continue // none, or "relay via …"
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !usableUnderlay(ip.Unmap(), mesh) {
			continue
		}
		if ip.Unmap().String() == r.HostName {
			continue // the machine via already names
		}
		t := url.URL{Scheme: "ssh", User: url.User(r.User), Host: net.JoinHostPort(ip.Unmap().String(), r.Port), Path: u.Path}
		if r.Port == "22" {
			t.Host = hostForURL(ip.Unmap())
		}
		if seen[t.String()] {
			continue // two machines behind one address: the first
		}
		seen[t.String()] = true
		out = append(out, learnedTarget{Machine: m.Name, Target: t.String()})
	}
	return out, nil
}

func downRank(state string) int {
	if state == "down" {
		return 1
	}
	return 0
}

func usableUnderlay(ip netip.Addr, mesh []netip.Prefix) bool {
	if !ip.IsValid() || ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
		return false
	}
	for _, p := range mesh {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

func hostForURL(ip netip.Addr) string {
	if ip.Is6() {
		return "[" + ip.String() + "]"
	}
	return ip.String()
}
