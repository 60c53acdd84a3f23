package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// addNATHost adds host name behind a NAT of kind to f's hosts (f.procs is
// the caller's to size). With replyOnly its router, if it has one, lets
// in only replies to what went out, as a home router does.
func (f *formed) addNATHost(ctx context.Context, t *testing.T, name string, kind lab.NATKind, replyOnly bool) *lab.Host {
	t.Helper()
	h, err := f.lab.AddHost(ctx, name, lab.HostOptions{NAT: kind})
	if err != nil {
		t.Fatal(err)
	}
	if replyOnly && h.Router != nil {
		if err := h.Router.ReplyOnlyFilter(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f.hosts = append(f.hosts, h)
	return h
}

// natHosts is a lab of one host per kind (h1, h2, …), each behind that
// kind of NAT (replyOnly as addNATHost), no agent started yet.
func natHosts(ctx context.Context, t *testing.T, replyOnly bool, kinds ...lab.NATKind) *formed {
	t.Helper()
	f := &formed{lab: lab.Start(t), procs: make([]*lab.Process, len(kinds))}
	for i, k := range kinds {
		f.addNATHost(ctx, t, fmt.Sprintf("h%d", i+1), k, replyOnly)
	}
	return f
}

// fourHosts forms four machines, m2 and m4 behind home-router NATs, their
// agents logging at logLevel; logsEnv names the variable that keeps their
// logs (keepLogs), "" none.
func fourHosts(ctx context.Context, t *testing.T, logLevel, logsEnv string) *formed {
	t.Helper()
	f := natHosts(ctx, t, false, lab.NATNone, lab.NATEndpointIndependent, lab.NATNone, lab.NATEndpointIndependent)
	f.logLevel = logLevel
	if logsEnv != "" {
		keepLogs(t, f, logsEnv)
	}
	f.startAgent(ctx, t, 0, "init", "--name", "m1", "--foreground")
	for i := 1; i < len(f.hosts); i++ {
		f.startAgent(ctx, t, i, "join", "--name", fmt.Sprintf("m%d", i+1), "--foreground", f.token(ctx, t, 0))
	}
	return f
}
