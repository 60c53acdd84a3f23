package e2e

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
)

func init() {
	ingressHelpers["dnsall"] = helperDNSAll
	ingressHelpers["tlsget"] = helperTLSGet
}

// helperDNSAll answers A -answer for every name: pebble's validation
// authority then connects to that machine for any name.
func helperDNSAll(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dnsall", flag.ContinueOnError)
	listen := fs.String("listen", "", "ip:port")
	answer := fs.String("answer", "", "IPv4 address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	ip := net.ParseIP(*answer)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: ip})
			}
		}
		w.WriteMsg(m)
	})}
	go func() { <-ctx.Done(); srv.Shutdown() }()
	fmt.Fprintf(stdout, "ready %s\n", pc.LocalAddr())
	return srv.ActivateAndServe()
}

// helperTLSGet makes one request and prints one JSON line (tlsResult):
// a TLS handshake with -addr for -sni (verified against -roots unless
// -alpn is given, which offers that protocol and verifies nothing), then,
// with -path, an HTTP GET over it; without -sni, a plain HTTP GET of
// -path with Host -host.
func helperTLSGet(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tlsget", flag.ContinueOnError)
	addr := fs.String("addr", "", "ip:port")
	sni := fs.String("sni", "", "server name")
	host := fs.String("host", "", "Host header of a plain HTTP request")
	roots := fs.String("roots", "", "PEM file")
	alpn := fs.String("alpn", "", "protocol to offer")
	path := fs.String("path", "", "GET this path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var res tlsResult
	defer func() { json.NewEncoder(stdout).Encode(res) }()
	tc := &tls.Config{ServerName: *sni}
	if *alpn != "" {
		tc.NextProtos, tc.InsecureSkipVerify = []string{*alpn}, true
	} else if *roots != "" {
		pool := x509.NewCertPool()
		b, err := os.ReadFile(*roots)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(b)
		tc.RootCAs = pool
	}
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: tc, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, *addr)
		}}}
	if *sni == "" {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+*addr+*path, nil)
		req.Host = *host
		resp, err := client.Do(req)
		if err != nil {
			res.Err = err.Error()
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		res.Status, res.Body = resp.StatusCode, string(b)
		return nil
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", *addr, tc)
	if err != nil {
		res.Err = err.Error()
		return nil
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	res.Serial, res.SPKI = fmt.Sprintf("%x", leaf.SerialNumber), fmt.Sprintf("%x", spki[:8])
	if *path != "" {
		resp, err := client.Get("https://" + *sni + *path)
		if err != nil {
			res.Err = err.Error()
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		res.Status, res.Body = resp.StatusCode, string(b)
	}
	return nil
}

type tlsResult struct {
	Serial, SPKI string // the leaf's serial (hex) and SHA-256 of its public key (first 8 bytes, hex)
	Status       int
	Body         string
	Err          string
}

// selfSignedPEM is a certificate and key for pebble's own HTTPS on ip.
func selfSignedPEM(t *testing.T, ip net.IP) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble"},
		IPAddresses: []net.IP{ip}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestAdversaryCerts: m1, m2 and m3 are ingress machines sharing a
// certificate from a real ACME CA (pebble, on a host outside the
// network); m4 is a member without the role. m3 is removed and, gone
// rogue with its data dir, tries to read certificate keys, old and new,
// and to use what it kept; m4 tries to read them too; an outsider sends
// challenges for a foreign name. Every attempt must fail, and HTTPS
// through m1 and m2 keeps working.
func TestAdversaryCerts(t *testing.T) {
	if _, err := os.Stat("/usr/bin/pebble"); err != nil {
		t.Skip("pebble not installed (Debian package pebble; scripts/test installs it)")
	}
	ctx := context.Background()
	f := form(ctx, t, 4, nil)
	f.waitAllAlive(ctx, t, 60*time.Second)
	ca, err := f.lab.AddHost(ctx, "ca", lab.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms := map[string]api.MachineInfo{}
	for _, m := range f.machines(ctx, t, 0) {
		ms[m.Name] = m
	}
	m1Addr := f.hosts[0].Addr.String()

	// The CA: pebble validating against m1's underlay address for every
	// name (m1 passes challenges of names another machine issues on).
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	certPEM, keyPEM := selfSignedPEM(t, net.IP(ca.Addr.AsSlice()))
	trust := filepath.Join(dir, "pebble-tls.pem")
	os.WriteFile(trust, certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "pebble-key.pem"), keyPEM, 0o644)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": ca.Addr.String() + ":14000", "managementListenAddress": ca.Addr.String() + ":15000",
		"certificate": trust, "privateKey": filepath.Join(dir, "pebble-key.pem"),
		"httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"certificateValidityPeriod": 3600,
	}})
	os.WriteFile(filepath.Join(dir, "pebble.json"), conf, 0o644)
	if _, err := ca.StartHelper(ctx, "dns", "dnsall", true, "-listen", ca.Addr.String()+":53", "-answer", m1Addr); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Start("pebble", "env", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0",
		"/usr/bin/pebble", "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", ca.Addr.String()+":53"); err != nil {
		t.Fatal(err)
	}
	get := func(args ...string) tlsResult {
		t.Helper()
		out, err := ca.RunHelper(ctx, "tlsget", args...)
		if err != nil {
			t.Fatalf("tlsget %q: %v", args, err)
		}
		var r tlsResult
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
			t.Fatalf("tlsget %q: %v: %q", args, err, out)
		}
		return r
	}
	mgmt := func(path string) tlsResult {
		return get("-addr", ca.Addr.String()+":15000", "-sni", ca.Addr.String(), "-roots", trust, "-path", path)
	}
	testkit.EventuallyTrue(t, "pebble up", 30*time.Second, func() bool { return mgmt("/roots/0").Status == 200 })
	roots := filepath.Join(dir, "pebble-roots.pem")
	os.WriteFile(roots, []byte(mgmt("/roots/0").Body), 0o644)

	// Every agent restarted with the CA; m1, m2 and m3 get the ingress
	// role; then m4 writes the service and m1's container (the records
	// shortcut of TestIngress). Roles first: a route that exists while
	// the roles arrive one by one is ordered by the first ingress machine,
	// whose challenges then go to a new issuer (one failed order and a
	// minute's retry; issuer.go).
	if _, err := f.hosts[0].StartHelper(ctx, "backend", "httpserve", true, "-listen", ms["m1"].Address+":8080", "-name", "shop"); err != nil {
		t.Fatal(err)
	}
	acmeArgs := []string{"agent", "--acme-directory", "https://" + ca.Addr.String() + ":14000/dir", "--acme-roots", trust}
	for i := range 4 {
		f.procs[i].Signal(syscall.SIGTERM)
		f.procs[i].Wait(ctx)
		f.startAgent(ctx, t, i, acmeArgs...)
	}
	f.waitAllAlive(ctx, t, 60*time.Second)
	for _, m := range []string{"m1", "m2", "m3"} {
		if out, err := f.uncloud(ctx, t, 0, "machine", "role", "add", m, "ingress"); err != nil {
			t.Fatalf("role add %s: %v\n%s", m, err, out)
		}
	}
	for i := range 3 {
		testkit.EventuallyTrue(t, f.hosts[i].Name+"'s ingress running", 30*time.Second, func() bool {
			return f.ingressStatus(ctx, t, i).Running
		})
	}
	f.procs[3].Signal(syscall.SIGTERM)
	f.procs[3].Wait(ctx)
	st4, err := crdt.Open(ctx, crdt.Config{Dir: filepath.Join(f.hosts[3].Dir, "lib", "state"), Name: ms["m4"].ID,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// Signed as their owners would: the service by m4, the container by m1.
	for _, r := range []crdt.Record{
		&record.Service{Name: "shop", Ports: []string{"shop.test:8080/https"}},
		&record.Container{MachineID: ms["m1"].ID, ID: "c-shop", Name: "shop-1", Service: "shop", Address: ms["m1"].Address, State: "running"},
	} {
		signer := hostSigner(t, f.hosts[3])
		if _, ok := r.(*record.Container); ok {
			signer = hostSigner(t, f.hosts[0])
		}
		raw, err := crdt.EncodeSigned(r, signer)
		if err != nil {
			t.Fatal(err)
		}
		if err := st4.PutUnchecked(ctx, r.Key(), raw); err != nil {
			t.Fatal(err)
		}
	}
	st4.Close()
	f.startAgent(ctx, t, 3, acmeArgs...)
	served := func(i int) tlsResult {
		return get("-addr", f.hosts[i].Addr.String()+":443", "-sni", "shop.test", "-roots", roots, "-path", "/")
	}
	var first tlsResult
	start := time.Now()
	for i := range 3 {
		testkit.Eventually(t, f.hosts[i].Name+" serves shop.test with pebble's certificate", 90*time.Second, func() error {
			r := served(i)
			if r.Err != "" || r.Body != "shop" {
				return fmt.Errorf("%+v", r)
			}
			if first.Serial == "" {
				first = r
			}
			if r.Serial != first.Serial {
				return fmt.Errorf("serves serial %s, %s serves %s", r.Serial, f.hosts[0].Name, first.Serial)
			}
			return nil
		})
	}
	t.Logf("shop.test certified and served by m1, m2, m3 in %v", time.Since(start).Round(time.Millisecond))

	var attempts, through int
	attempt := func(what string, got bool) {
		t.Helper()
		attempts++
		if got {
			through++
			t.Errorf("ATTEMPT GOT THROUGH: %s", what)
		} else {
			t.Logf("attempt refused: %s", what)
		}
	}
	sealKey := func(i int) *sealingKey {
		var st struct {
			MachineID    string `json:"machine_id"`
			IdentitySeed []byte `json:"identity_seed"`
		}
		b, err := os.ReadFile(filepath.Join(f.hosts[i].Dir, "lib", "machine.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		k, err := sealing.KeyFromSeed(st.IdentitySeed)
		if err != nil {
			t.Fatal(err)
		}
		return &sealingKey{id: st.MachineID, key: k}
	}
	certsOf := func(i int) []*record.Cert {
		out, err := f.uncloud(ctx, t, i, "state", "ls", "/certs/", "-o", "json")
		if err != nil {
			t.Fatalf("state ls on %s: %v", f.hosts[i].Name, err)
		}
		var es []api.StateEntry
		if err := json.Unmarshal([]byte(out), &es); err != nil {
			t.Fatalf("state ls: %v: %.300s", err, out)
		}
		var cs []*record.Cert
		for _, e := range es {
			var c record.Cert
			if json.Unmarshal(e.Value, &c) == nil && c.Name != "" {
				cs = append(cs, &c)
			}
		}
		return cs
	}
	keys := func(cs []*record.Cert) []*record.Cert {
		var out []*record.Cert
		for _, c := range cs {
			if strings.HasSuffix(c.Name, ".key") {
				out = append(out, c)
			}
		}
		return out
	}
	m3, m4 := sealKey(2), sealKey(3)
	var before []*record.Cert
	testkit.Eventually(t, "m3 (an ingress machine) opens the certificate and account keys", 30*time.Second, func() error {
		before = keys(certsOf(0))
		if len(before) < 2 {
			return fmt.Errorf("%d keys in the state, want a certificate key and an account key", len(before))
		}
		for _, c := range before {
			if !m3.open(c) {
				return fmt.Errorf("m3 cannot open %s", c.Name)
			}
		}
		return nil
	})
	for _, c := range before {
		attempt("m4 (member without the ingress role) opens "+c.Name, m4.open(c))
	}

	// machine rm m3.
	start = time.Now()
	if out, err := f.uncloud(ctx, t, 0, "machine", "rm", "m3"); err != nil {
		t.Fatalf("machine rm m3: %v\n%s", err, out)
	}
	var now [2]tlsResult
	testkit.Eventually(t, "m1 and m2 serve one re-issued certificate", 90*time.Second, func() error {
		for i := range 2 {
			now[i] = served(i)
			if r := now[i]; r.Err != "" || r.Body != "shop" || r.SPKI == first.SPKI {
				return fmt.Errorf("%s: %+v", f.hosts[i].Name, r)
			}
		}
		if now[0].Serial != now[1].Serial {
			return fmt.Errorf("m1 serves %s, m2 %s", now[0].Serial, now[1].Serial)
		}
		return nil
	})
	t.Logf("FIGURE certificate re-issued with a new key and served by m1 and m2 %v after machine rm m3",
		time.Since(start).Round(time.Millisecond))

	// m3 gone rogue: its agent stops, its data dir is read.
	f.procs[2].Signal(syscall.SIGTERM)
	f.procs[2].Wait(ctx)
	st3, err := crdt.Open(ctx, crdt.Config{Dir: filepath.Join(f.hosts[2].Dir, "lib", "state"), Name: "rogue",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := st3.List(ctx, record.CertsPrefix)
	st3.Close()
	if err != nil {
		t.Fatal(err)
	}
	var keptKeys []*record.Cert
	for _, r := range kept {
		if c, ok := r.(*record.Cert); ok && strings.HasSuffix(c.Name, ".key") {
			keptKeys = append(keptKeys, c)
		}
	}
	current := keys(certsOf(0))
	for _, c := range current {
		attempt("removed m3 opens the current "+c.Name, m3.open(c))
		attempt("m4 (member without the ingress role) opens the current "+c.Name, m4.open(c))
	}
	oldKeys := 0
	for _, c := range keptKeys {
		// What m3 kept opens (it could read it then): the old key, which
		// must be useless now.
		if !m3.open(c) || !strings.HasPrefix(c.Name, "certificates/") {
			continue
		}
		if m3.spki(t, c) == first.SPKI {
			oldKeys++
		}
		attempt("removed m3's kept key "+c.Name+" is the key of the served certificate", m3.spki(t, c) == now[0].SPKI)
	}
	if oldKeys == 0 {
		t.Fatalf("m3's data dir holds no readable copy of the old certificate key (%d key records): the test tests nothing", len(keptKeys))
	}
	// The certificate m3 kept the key of is revoked at the CA.
	testkit.EventuallyTrue(t, "pebble answers for the replaced certificate", 20*time.Second, func() bool {
		return mgmt("/cert-status-by-serial/"+first.Serial).Status == 200
	})
	attempt("the certificate whose key m3 kept is still valid at the CA",
		!strings.Contains(mgmt("/cert-status-by-serial/"+first.Serial).Body, "Revoked"))

	// Challenges for a foreign name, from outside, at m1 and m2.
	for i := range 2 {
		h := f.hosts[i].Addr.String()
		logFrom := f.procs[i].LogLen()
		r := get("-addr", h+":80", "-host", "evil.example", "-path", "/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0")
		attempt("HTTP-01 challenge for a foreign name answered by "+f.hosts[i].Name, r.Status == 200)
		r = get("-addr", h+":443", "-sni", "evil.example", "-alpn", "acme-tls/1")
		attempt("TLS-ALPN-01 handshake for a foreign name completed by "+f.hosts[i].Name, r.Err == "")
		time.Sleep(200 * time.Millisecond)
		forwarded := false
		for _, line := range strings.Split(f.procs[i].Log()[logFrom:], "\n") {
			forwarded = forwarded || strings.Contains(line, "forwarding") && strings.Contains(line, "evil.example")
		}
		attempt("a challenge for a foreign name forwarded by "+f.hosts[i].Name, forwarded)
	}

	// The legitimate path still works.
	for i := range 2 {
		if r := served(i); r.Err != "" || r.Body != "shop" || r.Serial != now[0].Serial {
			t.Errorf("HTTPS through %s after the attacks: %+v", f.hosts[i].Name, r)
		}
	}
	t.Logf("ADVERSARY area=certs attempts=%d through=%d", attempts, through)
	if through > 0 {
		t.Fatalf("%d of %d attempts got through", through, attempts)
	}
}

// sealingKey is a machine's sealing key, read from its data dir.
type sealingKey struct {
	id  string
	key *ecdh.PrivateKey
}

func (k *sealingKey) open(c *record.Cert) bool {
	_, _, err := sealing.Open(c.Data, []byte(c.Name), k.id, k.key)
	return err == nil
}

// spki is the public key hash (as tlsResult.SPKI) of a private key blob.
func (k *sealingKey) spki(t *testing.T, c *record.Cert) string {
	plain, _, err := sealing.Open(c.Data, []byte(c.Name), k.id, k.key)
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(plain)
	if blk == nil {
		t.Fatalf("%s: not PEM", c.Name)
	}
	var priv crypto.Signer
	if p, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		priv, _ = p.(crypto.Signer)
	} else if p, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		priv = p
	}
	if priv == nil {
		t.Fatalf("%s: no private key in it", c.Name)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(der)
	return fmt.Sprintf("%x", h[:8])
}
