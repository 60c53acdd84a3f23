package membership

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// joinAs posts a join request for machine id through the token in slot.
func joinAs(t *testing.T, m *Members, slot int, id string) (int, string) {
	t.Helper()
	wg, _ := tun.GeneratePrivateKey()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	body, _ := json.Marshal(joinRequest{NetworkID: "net1", MachineID: id, Name: id, WireGuardKey: wg.PublicKey(), IdentityKey: api.EncodeKey(pub)})
	r := httptest.NewRequest(http.MethodPost, api.JoinPath, strings.NewReader(string(body)))
	r.RemoteAddr = meshaddr.JoinAddr(uint8(slot)).String() + ":40000"
	w := httptest.NewRecorder()
	m.HandleJoin(w, r)
	return w.Code, w.Body.String()
}

// TestHandleJoinSpendsFirst: a join takes the token's use before asking
// for a subnet and gives it back when the subnet cannot be had; a used,
// revoked or busy token is answered at once with 410 or 409, and a
// refused join leaves no promise behind.
func TestHandleJoinSpendsFirst(t *testing.T) {
	store := crdttest.Open(t, "self")
	calls := newFakeCalls()
	m := newTestMembers(t, Parts{Records: store, Calls: calls, Device: &fakeDevice{}})
	putMachine(t, store, "self", 1)
	putMachine(t, store, "m2", 2)
	putMachine(t, store, "m3", 3)
	calls.reserve["m2"], calls.reserve["m3"] = refuses, refuses
	k, _ := tun.GeneratePrivateKey()
	tok, err := m.tokens.add("t1", k.PublicKey(), time.Hour, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	code, body := joinAs(t, m, tok.Slot, "a")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "only 1 of 3 machines agreed") {
		t.Fatalf("join without a majority = %d %s", code, body)
	}
	if got := m.tokens.list()[0]; got.UsesLeft != 1 || got.Joining != "" {
		t.Fatalf("after a failed join the token is %+v, want its use back", got)
	}
	if n := m.promises.unfulfilled(); n != 0 {
		t.Fatalf("a failed join left %d promises here", n)
	}

	// Another join holds the token: the next one is told so at once.
	m.tokens.Tokens[0].Joining = "someone"
	if code, body := joinAs(t, m, tok.Slot, "b"); code != http.StatusConflict || !strings.Contains(body, "a join with this token is in progress") {
		t.Fatalf("join while another holds the token = %d %s", code, body)
	}
	m.tokens.Tokens[0].Joining = ""

	calls.reserve["m2"], calls.reserve["m3"] = promises, promises
	if code, body := joinAs(t, m, tok.Slot, "c"); code != http.StatusOK {
		t.Fatalf("join with a majority = %d %s", code, body)
	}
	if code, body := joinAs(t, m, tok.Slot, "d"); code != http.StatusGone || !strings.Contains(body, "has been used") {
		t.Fatalf("join with a used token = %d %s", code, body)
	}
	if n := m.promises.unfulfilled(); n != 1 {
		t.Fatalf("%d promises wait for a record after one successful join, want 1", n)
	}

	k2, _ := tun.GeneratePrivateKey()
	tok2, _ := m.tokens.add("t2", k2.PublicKey(), time.Hour, 5, time.Now())
	if err := m.RevokeToken(t.Context(), "t2"); err != nil {
		t.Fatal(err)
	}
	if code, body := joinAs(t, m, tok2.Slot, "e"); code != http.StatusGone || !strings.Contains(body, "was revoked") {
		t.Fatalf("join with a revoked token = %d %s", code, body)
	}
}
