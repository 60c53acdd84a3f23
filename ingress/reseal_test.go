package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// canOpen reports whether machine id's sealing key opens the stored
// value of key now.
func canOpen(t *testing.T, st State, id, key string) bool {
	t.Helper()
	r, err := st.Get(context.Background(), record.CertsPrefix+key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	_, _, err = sealing.Open(r.(*record.Cert).Data, []byte(key), id, sealKeyOf(t, id))
	return err == nil
}

func header(t *testing.T, st State, key string) sealing.Header {
	t.Helper()
	r, err := st.Get(context.Background(), record.CertsPrefix+key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	h, err := sealing.ParseHeader(r.(*record.Cert).Data)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestResealOnRoleChanges: the storage follows the ingress role. m1 runs
// the ingress and holds two certificates, one it issues and one m2 will
// issue. When m2 gets the role, everything is re-wrapped so that m2 can
// open it (by m1 in both cases: m2 cannot open them yet); m3, a member
// without the role, never can. When m2 loses the role, it is re-wrapped
// for m1 alone, and the exposure history still names m2.
func TestResealOnRoleChanges(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	put(t, st, ingressMachine(t, "m1"))
	m3 := ingressMachine(t, "m3")
	m3.Roles = nil
	put(t, st, m3)
	in := startIngress(t, st, func(c *Config) { c.ACME.Disable = true })
	both := []string{"m1", "m2"}
	names := []string{nameIssuedBy("m1", both), nameIssuedBy("m2", both)}
	var keys []string
	for _, n := range names {
		for _, ext := range []string{".key", ".crt", ".json"} {
			k := "certificates/ca/" + n + "/" + n + ext
			keys = append(keys, k)
			if err := in.certs.storage.Store(ctx, k, []byte("content of "+k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	acct := "acme/ca/users/default/default.key"
	keys = append(keys, acct)
	if err := in.certs.storage.Store(ctx, acct, []byte("account key")); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if canOpen(t, st, "m2", k) || canOpen(t, st, "m3", k) {
			t.Fatalf("%s opens for a machine without the role", k)
		}
	}

	start := time.Now()
	put(t, st, ingressMachine(t, "m2"))
	eventually(t, "everything re-wrapped for m2", func() bool {
		return !slices.ContainsFunc(keys, func(k string) bool { return !canOpen(t, st, "m2", k) })
	})
	t.Logf("re-wrapped %d blobs for a new ingress machine in %v", len(keys), time.Since(start).Round(time.Millisecond))
	for _, k := range keys {
		if canOpen(t, st, "m3", k) {
			t.Fatalf("%s opens for m3, a member without the ingress role", k)
		}
		if !canOpen(t, st, "m1", k) {
			t.Fatalf("%s no longer opens for m1", k)
		}
	}
	// Content unchanged through the re-wrap.
	s2 := testStorage(t, st, "m2", "m1", "m2")
	if got, err := s2.Load(ctx, keys[0]); err != nil || string(got) != "content of "+keys[0] {
		t.Fatalf("m2 loads %q %v", got, err)
	}

	m2 := ingressMachine(t, "m2")
	m2.Roles = nil
	put(t, st, m2)
	eventually(t, "everything re-wrapped without m2", func() bool {
		return !slices.ContainsFunc(keys, func(k string) bool { return canOpen(t, st, "m2", k) })
	})
	for _, k := range keys {
		h := header(t, st, k)
		if !slices.Equal(h.RecipientIDs(), []string{"m1"}) || !slices.Contains(h.Exposed, "m2") {
			t.Fatalf("%s: recipients %v exposed %v, want [m1] and m2 in the history", k, h.RecipientIDs(), h.Exposed)
		}
	}
}

// TestReissueOnRemoval: three ingress machines share a certificate
// ordered from pebble by m1. m3 is removed (revoked, record deleted):
// m1 replaces the ACME account, re-issues the certificate with a new
// private key and seals it for m1 and m2 only; both serve the new one.
// m3's sealing key opens the copy it kept, not what is stored now.
func TestReissueOnRemoval(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	httpLn, tlsLn := freeLocal(t), freeLocal(t)
	pb := startPebble(t, portOf(t, httpLn), portOf(t, tlsLn), 3600)
	for _, id := range []string{"m1", "m2", "m3"} {
		put(t, st, ingressMachine(t, id))
	}
	// m1 issues the name before and after the removal, and is the only
	// machine pebble validates against.
	var name string
	for i := 0; ; i++ {
		name = fmt.Sprintf("shop%d.test", i)
		if issuerFor(name, []string{"m1", "m2", "m3"}) == "m1" && issuerFor(name, []string{"m1", "m2"}) == "m1" {
			break
		}
	}
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "shop", nil)
	put(t, st, container("c2", "web", "127.0.0.2"))
	acme := ACMEConfig{Directory: pb.dir, RootCAs: pb.trust, DisableTLSALPN01: true}
	ins := map[string]*Ingress{}
	for _, id := range []string{"m1", "m2", "m3"} {
		ins[id] = startIngress(t, st, func(c *Config) {
			c.MachineID, c.ACME = id, acme
			if id == "m1" {
				c.HTTPAddr, c.HTTPSAddr = httpLn, tlsLn
			}
		})
	}
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("%s:%d/https", name, port)}})
	roots := pb.roots(t)
	var first *x509.Certificate
	for _, id := range []string{"m1", "m2", "m3"} {
		eventually(t, id+" serves the certificate", func() bool {
			c, err := servedCert(ins[id].HTTPSAddr().String(), name, roots)
			if err == nil && first == nil {
				first = c
			}
			return err == nil && c.SerialNumber.Cmp(first.SerialNumber) == 0
		})
	}
	keyName := certmagic.StorageKeys.SitePrivateKey(ins["m1"].certs.acme.IssuerKey(), name)
	r, err := st.Get(ctx, record.CertsPrefix+keyName)
	if err != nil {
		t.Fatal(err)
	}
	kept := r.(*record.Cert).Data // what m3 holds in its data dir
	oldKey, _, err := sealing.Open(kept, []byte(keyName), "m3", sealKeyOf(t, "m3"))
	if err != nil {
		t.Fatalf("m3 (an ingress machine) cannot open the certificate key: %v", err)
	}
	accounts := func() []string {
		var out []string
		recs, _ := st.List(ctx, record.CertsPrefix+"acme/")
		for _, r := range recs {
			if c := r.(*record.Cert); strings.HasSuffix(c.Name, ".key") {
				out = append(out, c.Name)
			}
		}
		return out
	}
	if len(accounts()) == 0 || !canOpen(t, st, "m3", accounts()[0]) {
		t.Fatalf("account keys %v: m3 should hold one before its removal", accounts())
	}

	// machine rm m3: the revoked record, the machine record deleted, and
	// m3's agent is gone from the network.
	start := time.Now()
	put(t, st, &record.Revoked{MachineID: "m3", By: "m1", At: time.Now()})
	del(t, st, record.MachinesPrefix+"m3")
	ins["m3"].Close()

	var took time.Duration
	for _, id := range []string{"m1", "m2"} {
		eventually(t, id+" serves a re-issued certificate", func() bool {
			c, err := servedCert(ins[id].HTTPSAddr().String(), name, roots)
			return err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0
		})
		took = max(took, time.Since(start))
	}
	t.Logf("certificate re-issued and served by m1 and m2 %v after m3's removal", took.Round(time.Millisecond))
	now, err := servedCert(ins["m2"].HTTPSAddr().String(), name, roots)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(now.RawSubjectPublicKeyInfo, first.RawSubjectPublicKeyInfo) {
		t.Fatal("the re-issued certificate has the old public key")
	}
	if canOpen(t, st, "m3", keyName) {
		t.Fatal("m3's sealing key opens the current certificate key")
	}
	if !canOpen(t, st, "m1", keyName) || !canOpen(t, st, "m2", keyName) {
		t.Fatal("m1 or m2 cannot open the current certificate key")
	}
	h := header(t, st, keyName)
	if !slices.Equal(h.Exposed, []string{"m1", "m2"}) {
		t.Fatalf("current key exposed to %v, want [m1 m2]", h.Exposed)
	}
	// What m3 kept is the old key, which no longer matches the served
	// certificate.
	if _, err := tls.X509KeyPair(pemCert(now), oldKey); err == nil {
		t.Fatal("m3's kept key matches the served certificate")
	}
	for _, k := range accounts() {
		if canOpen(t, st, "m3", k) {
			t.Fatalf("m3 still opens ACME account key %s", k)
		}
		if slices.Contains(header(t, st, k).Exposed, "m3") {
			t.Fatalf("ACME account key %s was readable by m3 and is still in use", k)
		}
	}
	if ins["m1"].certs.reissued != 1 || ins["m2"].certs.reissued != 0 {
		t.Fatalf("re-issues: m1 %d, m2 %d; want 1 and 0", ins["m1"].certs.reissued, ins["m2"].certs.reissued)
	}
	// The replaced certificate, whose key m3 kept, is revoked at the CA.
	eventually(t, "the replaced certificate revoked at pebble", func() bool {
		resp, err := pb.client().Get(fmt.Sprintf("https://%s/cert-status-by-serial/%x", pb.mgmt, first.SerialNumber))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"Revoked"`)
	})
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestMismatchedPair: a stored key and certificate that do not match
// (two machines wrote the name's blobs at once) are reported only once
// they stayed so for pairSettle; a matching pair never is.
func TestMismatchedPair(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	put(t, st, ingressMachine(t, "m1"))
	in := startIngress(t, st, func(c *Config) { c.ACME.Disable = true })
	a, _ := selfSigned(t, "pair.test")
	b, _ := selfSigned(t, "pair.test")
	keyPEM := func(c tls.Certificate) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	crtPEM := func(c tls.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	}
	g := &certGroup{ca: "ca", name: "pair.test"}
	store := func(crt, key []byte) {
		s := in.certs.storage
		if err := s.Store(ctx, certmagic.StorageKeys.SiteCert("ca", g.name), crt); err != nil {
			t.Fatal(err)
		}
		if err := s.Store(ctx, certmagic.StorageKeys.SitePrivateKey("ca", g.name), key); err != nil {
			t.Fatal(err)
		}
	}
	store(crtPEM(a), keyPEM(a))
	for range 2 {
		if in.certs.mismatched(ctx, g) {
			t.Fatal("a matching pair reported")
		}
	}
	store(crtPEM(a), keyPEM(b))
	if in.certs.mismatched(ctx, g) {
		t.Fatal("a mismatch reported at once (the other blob may still be on its way)")
	}
	in.certs.mu.Lock()
	in.certs.mismatch[g.name] = time.Now().Add(-pairSettle)
	in.certs.mu.Unlock()
	if !in.certs.mismatched(ctx, g) {
		t.Fatal("a mismatch that lasted pairSettle not reported")
	}
}

// TestReissueWhenNobodyCanOpen: the only ingress machine, m1, is replaced
// by m2 while down (m1 removed before it could re-wrap anything for m2).
// m2 cannot open the stored certificate, and no live machine can: it
// orders a new one, under a new account, sealed for itself.
func TestReissueWhenNobodyCanOpen(t *testing.T) {
	st := openStore(t)
	httpLn, tlsLn := freeLocal(t), freeLocal(t)
	pb := startPebble(t, portOf(t, httpLn), portOf(t, tlsLn), 3600)
	put(t, st, ingressMachine(t, "m1"))
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "solo", nil)
	put(t, st, container("c2", "web", "127.0.0.2"))
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("solo.test:%d/https", port)}})
	acme := ACMEConfig{Directory: pb.dir, RootCAs: pb.trust, DisableTLSALPN01: true}
	m1 := startIngress(t, st, func(c *Config) { c.HTTPAddr, c.HTTPSAddr, c.ACME = httpLn, tlsLn, acme })
	roots := pb.roots(t)
	var first *x509.Certificate
	eventually(t, "m1 serves its certificate", func() bool {
		c, err := servedCert(m1.HTTPSAddr().String(), "solo.test", roots)
		first = c
		return err == nil
	})
	m1.Close()
	put(t, st, &record.Revoked{MachineID: "m1", At: time.Now()})
	del(t, st, record.MachinesPrefix+"m1")
	put(t, st, ingressMachine(t, "m2"))
	start := time.Now()
	m2 := startIngress(t, st, func(c *Config) { c.MachineID, c.HTTPAddr, c.HTTPSAddr, c.ACME = "m2", httpLn, tlsLn, acme })
	eventually(t, "m2 serves a new certificate", func() bool {
		c, err := servedCert(m2.HTTPSAddr().String(), "solo.test", roots)
		return err == nil && !bytes.Equal(c.RawSubjectPublicKeyInfo, first.RawSubjectPublicKeyInfo)
	})
	t.Logf("m2 ordered anew and serves %v after it started", time.Since(start).Round(time.Millisecond))
	keyName := certmagic.StorageKeys.SitePrivateKey(m2.certs.acme.IssuerKey(), "solo.test")
	if !canOpen(t, st, "m2", keyName) || canOpen(t, st, "m1", keyName) {
		t.Fatal("the new key is not sealed for m2 alone")
	}
}
