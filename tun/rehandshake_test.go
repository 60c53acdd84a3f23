package tun

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestRehandshake: a's first initiation reaches b before b knows a (as a
// joiner's reaches members its record has not reached yet) and is
// dropped; WireGuard would try again only 5 s later. Rehandshake starts a
// new one at once; on a peer with a session it does nothing.
func TestRehandshake(t *testing.T) {
	ctx := context.Background()
	ka, _ := GeneratePrivateKey()
	kb, _ := GeneratePrivateKey()
	open := func(k Key, addr string, port uint16) *Device {
		d, err := Open(ctx, Config{PrivateKey: k, Address: netip.MustParseAddr(addr), ListenPort: port, Userspace: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	a := open(ka, "10.210.1.1", 51987)
	b := open(kb, "10.210.2.1", 51988)
	toB := Peer{PublicKey: kb.PublicKey(), Endpoint: netip.MustParseAddrPort("127.0.0.1:51988"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.2.0/24")}, PersistentKeepalive: DefaultKeepalive}
	if err := a.SetPeer(toB); err != nil { // initiates at once; b drops it
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// b learns a now, without a keepalive of its own: only a initiates.
	if err := b.SetPeer(Peer{PublicKey: ka.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.1.0/24")}}); err != nil {
		t.Fatal(err)
	}
	handshake := func() time.Time {
		ps, err := a.Peers()
		if err != nil || len(ps) != 1 {
			t.Fatalf("peers of a: %v %v", ps, err)
		}
		return ps[0].LastHandshake
	}
	time.Sleep(200 * time.Millisecond)
	if !handshake().IsZero() {
		t.Fatal("a has a session although b dropped its only initiation")
	}
	start := time.Now()
	started, err := a.Rehandshake(kb.PublicKey(), "127.0.0.1:51988")
	if err != nil || !started {
		t.Fatalf("Rehandshake = %v, %v; want a new initiation", started, err)
	}
	for handshake().IsZero() {
		if time.Since(start) > 2*time.Second { // WireGuard's own retry comes at 5 s
			t.Fatal("no handshake 2 s after Rehandshake")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("handshake %v after Rehandshake (WireGuard alone: 5 s)", time.Since(start).Round(time.Millisecond))
	if started, err := a.Rehandshake(kb.PublicKey(), "127.0.0.1:51988"); err != nil || started {
		t.Errorf("Rehandshake with a session = %v, %v; want nothing done", started, err)
	}
	if ps, _ := a.Peers(); len(ps) != 1 || ps[0].PersistentKeepalive != DefaultKeepalive || ps[0].AllowedIPs[0] != toB.AllowedIPs[0] {
		t.Errorf("peer after Rehandshake: %+v, want its configuration kept", ps)
	}
}
