package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a private image registry in a lab host: Debian's
// docker-registry (distribution 2.8) with TLS from a test CA of its own
// and htpasswd users. Every lab Docker Engine trusts the CA: it is put
// in /etc/docker/certs.d/<addr>/, where Docker looks for a registry's CA
// (the directory is the machine's, so it is removed on Close).
type Registry struct {
	Host *Host
	// Addr is host:port as image references name it, e.g. 10.99.0.5:5000.
	Addr string
	// CA is the PEM of the certificate authority that signed its
	// certificate.
	CA []byte

	dir, certsDir string
	proc          *Process
}

// RegistryOptions shape a registry.
type RegistryOptions struct {
	// Users are the htpasswd users: name -> password.
	Users map[string]string
	// Port defaults to 5000.
	Port uint16
}

// StartRegistry runs a registry on h's address and waits until it answers
// over TLS.
func (h *Host) StartRegistry(ctx context.Context, o RegistryOptions) (*Registry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("no docker-registry on this machine (install the docker-registry package): %w", err)
	}
	if o.Port == 0 {
		o.Port = 5000
	}
	addr := netip.AddrPortFrom(h.Addr, o.Port).String()
	r := &Registry{Host: h, Addr: addr, dir: filepath.Join(h.Dir, "registry"),
		certsDir: filepath.Join("/etc/docker/certs.d", addr)}
	if err := os.MkdirAll(filepath.Join(r.dir, "data"), 0o700); err != nil {
		return nil, err
	}
	caPEM, certPEM, keyPEM, err := registryCerts(h.Addr)
	if err != nil {
		return nil, err
	}
	r.CA = caPEM
	var htpasswd strings.Builder
	users := make([]string, 0, len(o.Users))
	for u := range o.Users {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Users[u]), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&htpasswd, "%s:%s\n", u, hash)
	}
	files := map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM, "htpasswd": []byte(htpasswd.String())}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(r.dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  tls:
    certificate: %s
    key: %s
`, filepath.Join(r.dir, "data"), addr, filepath.Join(r.dir, "cert.pem"), filepath.Join(r.dir, "key.pem"))
	if len(users) > 0 {
		config += fmt.Sprintf("auth:\n  htpasswd:\n    realm: lab-registry\n    path: %s\n", filepath.Join(r.dir, "htpasswd"))
	}
	cfgPath := filepath.Join(r.dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.certsDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.certsDir, "ca.crt"), caPEM, 0o644); err != nil {
		return nil, err
	}
	r.proc, err = h.Start("registry", bin, "serve", cfgPath)
	if err != nil {
		r.Close()
		return nil, err
	}
	if err := r.waitReady(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// waitReady waits for the registry's "listening on" line: its TLS and
// users are then tried by the first Docker that talks to it.
func (r *Registry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := r.proc.WaitLog(ctx, 0, "listening on"); err != nil {
		return fmt.Errorf("registry on %s not ready: %w\n%s", r.Host.Name, err, r.proc.Log())
	}
	return nil
}

// Close stops the registry and takes its CA out of Docker's trust.
func (r *Registry) Close() {
	if r.proc != nil {
		r.proc.Stop(5 * time.Second)
	}
	os.RemoveAll(r.certsDir)
}

// registryCerts makes a CA and a server certificate for ip.
func registryCerts(ip netip.Addr) (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "uncloud lab registry CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip.String()},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{ip.AsSlice()},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
