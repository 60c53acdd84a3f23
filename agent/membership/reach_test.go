package membership

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/nat"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// TestTokenOnUnreachableIssuer: a machine behind a NAT with no public
// endpoint refuses to issue a token at once, naming the members that can
// be reached; with a public endpoint, an unknown NAT or --local it issues.
func TestTokenOnUnreachableIssuer(t *testing.T) {
	store := crdttest.Open(t, "self")
	m := newTestMembers(t, Parts{Records: store, Calls: newFakeCalls(), Device: &fakeDevice{}})
	putMachine(t, store, "self", 1)
	pubKey := func(rec *record.Machine) tun.Key { k, _ := tun.ParseKey(rec.WireGuardKey); return k }
	web := putMachine(t, store, "web", 2)
	web.Endpoints = []string{"198.18.0.9:51820"}
	if err := store.Put(context.Background(), web.Key(), web); err != nil {
		t.Fatal(err)
	}
	home := putMachine(t, store, "home", 3)
	peers := map[tun.Key]nat.Type{pubKey(web): nat.TypeNone, pubKey(home): nat.TypeEndpointIndependent}
	for _, tc := range []struct {
		name  string
		reach Reachability
		local bool
		want  string // "" when the token is issued
	}{
		{"behind a NAT", Reachability{NAT: nat.TypeEndpointIndependent, PeerNAT: peers}, false, "ask a machine that can be reached for the token instead: web (198.18.0.9:51820);"},
		{"symmetric, nobody reachable", Reachability{NAT: nat.TypeSymmetric}, false, "no member is known to be reachable from outside"},
		{"behind a NAT, --local", Reachability{NAT: nat.TypeSymmetric}, true, ""},
		{"port forward", Reachability{NAT: nat.TypeEndpointIndependent, Public: true}, false, ""},
		{"no NAT", Reachability{NAT: nat.TypeNone}, false, ""},
		{"not classified yet", Reachability{NAT: nat.TypeUnknown}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.cfg.Reach = func() Reachability { return tc.reach }
			info, err := m.CreateToken(context.Background(), api.TokenRequest{Local: tc.local})
			if tc.want == "" {
				if err != nil || info.Token == "" {
					t.Fatalf("CreateToken = %+v, %v; want a token", info, err)
				}
				return
			}
			if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "uncloud token --local") {
				t.Fatalf("CreateToken error = %v, want a conflict saying %q", err, tc.want)
			}
		})
	}
}
