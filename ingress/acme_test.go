package ingress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/record"
)

// pebble is a real ACME server (Debian's pebble) whose validation
// authority resolves every name to 127.0.0.1 through a DNS server of the
// test and connects to the given ports: challenges are really validated
// against the ingress listeners.
type pebble struct {
	dir   string         // ACME directory URL
	trust *x509.CertPool // pebble's own HTTPS
	mgmt  string         // management address
}

func startPebble(t *testing.T, httpPort, tlsPort, validitySeconds int) *pebble {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		t.Skip("pebble not installed (Debian package pebble; scripts/test installs it)")
	}
	tmp := t.TempDir()
	cert, pool := selfSigned(t, "localhost", "127.0.0.1")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	os.WriteFile(filepath.Join(tmp, "cert.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(tmp, "key.pem"), keyPEM, 0o600)

	listen, mgmt := freeLocal(t), freeLocal(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": filepath.Join(tmp, "cert.pem"), "privateKey": filepath.Join(tmp, "key.pem"),
		"httpPort": httpPort, "tlsPort": tlsPort, "ocspResponderURL": "",
		"externalAccountBindingRequired": false, "certificateValidityPeriod": validitySeconds,
	}}
	b, _ := json.Marshal(conf)
	os.WriteFile(filepath.Join(tmp, "pebble.json"), b, 0o600)

	dnsAddr := startLoopbackDNS(t)
	cmd := exec.Command(bin, "-config", filepath.Join(tmp, "pebble.json"), "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout = testWriter{t}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &pebble{dir: "https://" + listen + "/dir", trust: pool, mgmt: mgmt}
	c := p.client()
	eventually(t, "pebble up", func() bool {
		resp, err := c.Get(p.dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func (p *pebble) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.trust}}}
}

// roots is pebble's issuing root, which the served certificates chain to.
func (p *pebble) roots(t *testing.T) *x509.CertPool {
	resp, err := p.client().Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %q", b)
	}
	return pool
}

func freeLocal(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// portOf is the port of addr, host:port as freeLocal gives it.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("port of %q: %v", addr, err)
	}
	return port
}

// startLoopbackDNS answers A 127.0.0.1 for every name.
func startLoopbackDNS(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// servedCert connects to an ingress's HTTPS port for name and returns the
// leaf, verified against roots.
func servedCert(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// nameIssuedBy finds a host name whose issuer among machines is want.
func nameIssuedBy(want string, machines []string) string {
	for i := 0; ; i++ {
		n := fmt.Sprintf("site%d.test", i)
		if issuerFor(n, machines) == want {
			return n
		}
	}
}

// TestACMEShared: two ingress machines share one state. The name's
// issuer is m2, but pebble validates against m1 (its HTTP-01 port is
// m1's): m1 forwards the challenge to m2, never orders itself, and serves
// m2's certificate from the state. Then the certificate is renewed by m2
// (short validity) and both serve the renewed one.
func TestACMEShared(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	httpLn, tlsLn := freeLocal(t), freeLocal(t)
	pb := startPebble(t, portOf(t, httpLn), portOf(t, tlsLn), 40)

	put(t, st, ingressMachine(t, "m1"))
	put(t, st, ingressMachine(t, "m2"))
	name := nameIssuedBy("m2", []string{"m1", "m2"})
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "secure", nil)
	put(t, st, container("c2", "web", "127.0.0.2"))

	var m2 *Ingress
	acme := ACMEConfig{Directory: pb.dir, RootCAs: pb.trust, DisableTLSALPN01: true,
		RenewalWindowRatio: 0.5, RenewCheckInterval: time.Second}
	m1 := startIngress(t, st, func(c *Config) {
		c.MachineID = "m1"
		c.HTTPAddr, c.HTTPSAddr = httpLn, tlsLn
		c.ACME = acme
		c.PeerAddr = peerOf(&m2)
	})
	m2 = startIngress(t, st, func(c *Config) {
		c.MachineID = "m2"
		c.ACME = acme
	})
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("%s:%d/https", name, port)}})

	roots := pb.roots(t)
	var first *x509.Certificate
	eventually(t, "m1 serves the certificate m2 obtained", func() bool {
		c, err := servedCert(m1.HTTPSAddr().String(), name, roots)
		first = c
		return err == nil
	})
	// The issuer stores the certificate, then caches it to serve: m1
	// can load it from the store a moment before m2 serves it (once, in
	// a CI run, m2's handshake in that moment failed).
	var c2 *x509.Certificate
	eventually(t, "m2 (the issuer) serves "+name, func() bool {
		c, err := servedCert(m2.HTTPSAddr().String(), name, roots)
		c2 = c
		return err == nil
	})
	if c2.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("m1 and m2 serve different certificates: two orders were made")
	}
	if info := m1.certs.info(name); info.Issuer != "m2" || info.State != "valid" {
		t.Fatalf("m1 cert info %+v", info)
	}
	// A real request over HTTPS reaches the backend, verified against
	// pebble's root.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, m1.HTTPSAddr().String())
		}}}
	resp, err := client.Get("https://" + name + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "secure" {
		t.Fatalf("https body %q", body)
	}
	// Only one certificate was ever stored for the name: m1 made no order.
	recs, _ := st.List(ctx, record.CertsPrefix+"certificates/")
	var crts []string
	for _, r := range recs {
		c := r.(*record.Cert)
		if strings.HasSuffix(c.Name, name+".crt") {
			crts = append(crts, c.Name+" by "+c.By)
			if c.By != "m2" {
				t.Fatalf("certificate written by %s, want only the issuer m2", c.By)
			}
		}
	}
	if len(crts) != 1 {
		t.Fatalf("certificate records %v", crts)
	}

	// Renewal: 40 s validity, renewed at half. Both machines end up
	// serving the renewed certificate.
	eventually2 := func(what string, cond func() bool) {
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, m := range []*Ingress{m2, m1} {
		eventually2("renewed certificate on "+m.cfg.MachineID, func() bool {
			c, err := servedCert(m.HTTPSAddr().String(), name, roots)
			return err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 && c.NotAfter.After(first.NotAfter)
		})
	}
}

// peerOf points forwarded challenges at *m.
func peerOf(m **Ingress) func(string, bool) (string, error) {
	return func(id string, https bool) (string, error) {
		if id != "m2" || *m == nil {
			return "", fmt.Errorf("no address for %s", id)
		}
		if https {
			return (*m).HTTPSAddr().String(), nil
		}
		return (*m).HTTPAddr().String(), nil
	}
}

// TestACMETLSALPNForwarded: TLS-ALPN-01 only; pebble connects to m1's
// HTTPS port, m2 issues: m1 hands the connection to m2, which answers
// the challenge.
func TestACMETLSALPNForwarded(t *testing.T) {
	st := openStore(t)
	tlsLn := freeLocal(t)
	pb := startPebble(t, 1, portOf(t, tlsLn), 3600)
	put(t, st, ingressMachine(t, "m1"))
	put(t, st, ingressMachine(t, "m2"))
	name := nameIssuedBy("m2", []string{"m1", "m2"})
	acme := ACMEConfig{Directory: pb.dir, RootCAs: pb.trust, DisableHTTP01: true}
	var m2 *Ingress
	m1 := startIngress(t, st, func(c *Config) {
		c.MachineID, c.HTTPSAddr, c.ACME, c.PeerAddr = "m1", tlsLn, acme, peerOf(&m2)
	})
	m2 = startIngress(t, st, func(c *Config) { c.MachineID, c.ACME = "m2", acme })
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "alpn", nil)
	put(t, st, container("c2", "web", "127.0.0.2"))
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("%s:%d/https", name, port)}})
	roots := pb.roots(t)
	eventually(t, "m1 serves the certificate m2 obtained with a forwarded TLS-ALPN-01 challenge", func() bool {
		_, err := servedCert(m1.HTTPSAddr().String(), name, roots)
		return err == nil
	})
}

// TestACMETLSALPN obtains a certificate with TLS-ALPN-01 only, validated
// by pebble against the ingress's HTTPS listener.
func TestACMETLSALPN(t *testing.T) {
	st := openStore(t)
	httpLn, tlsLn := freeLocal(t), freeLocal(t)
	pb := startPebble(t, 1, portOf(t, tlsLn), 3600)
	in := startIngress(t, st, func(c *Config) {
		c.HTTPAddr, c.HTTPSAddr = httpLn, tlsLn
		c.ACME = ACMEConfig{Directory: pb.dir, RootCAs: pb.trust, DisableHTTP01: true}
	})
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "alpn", nil)
	put(t, st, container("c2", "web", "127.0.0.2"))
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("alpn.test:%d/https", port)}})
	roots := pb.roots(t)
	eventually(t, "certificate via TLS-ALPN-01", func() bool {
		_, err := servedCert(in.HTTPSAddr().String(), "alpn.test", roots)
		return err == nil
	})
}
