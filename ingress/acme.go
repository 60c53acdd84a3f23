package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/uncloud-mesh/uncloud/record"
)

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// ACMEConfig says where and how certificates are obtained.
type ACMEConfig struct {
	// Disable orders nothing: only Config.Certificates are served.
	Disable bool
	// Directory is the ACME directory URL; Let's Encrypt by default.
	Directory string
	Email     string
	// RootCAs, when set, is the trust for the directory's own HTTPS (a
	// private CA such as pebble).
	RootCAs *x509.CertPool
	// DisableHTTP01 and DisableTLSALPN01 turn a challenge type off.
	DisableHTTP01, DisableTLSALPN01 bool
	// OnDemand also obtains a certificate at the first handshake for a
	// name covered by a route (needed for wildcard hosts, whose names are
	// not known in advance). Concrete https hosts are always managed.
	OnDemand bool
	// RenewalWindowRatio is the part of a certificate's lifetime left
	// when it is renewed (certmagic's default, 1/3, when 0).
	RenewalWindowRatio float64
	// RenewCheckInterval is how often expiry is checked (default 10 min).
	RenewCheckInterval time.Duration
}

// forwardedHeader marks a challenge request one ingress machine passed to
// the issuer, so it is never passed on again.
const forwardedHeader = "Uncloud-Ingress-Forwarded"

// Bounds of challenge forwarding: anyone on the internet can send a
// challenge-shaped request, and each forward holds a connection to the
// issuer over the mesh. A validation is one small GET, or one TLS
// handshake with a self-signed certificate.
const (
	maxChallengeForwards = 16               // at once, HTTP and TLS-ALPN together
	challengeTimeout     = 10 * time.Second // a whole forward or splice
	maxChallengeAnswer   = 4 << 10          // an HTTP-01 answer is ~90 bytes
	maxSpliceIn          = 16 << 10         // client to issuer: a ClientHello and a few records
	maxSpliceOut         = 64 << 10         // issuer to client: the challenge certificate and handshake
	maxChallengeToken    = 128              // RFC 8555 tokens are 43 base64url characters
)

// certManager runs certmagic for the ingress: storage in the state, one
// issuer per name, challenge forwarding.
type certManager struct {
	in    *Ingress
	ctx   context.Context
	cache *certmagic.Cache
	cfg   *certmagic.Config
	// follower manages certificates of names another machine issues: it
	// renews later in the lifetime (half the window), so normally it only
	// ever reloads what the issuer renewed, and tries itself (gated by
	// onEvent) only once it has become the issuer.
	follower *certmagic.Config
	acme     *certmagic.ACMEIssuer
	storage  *certStorage
	forward  *httputil.ReverseProxy

	poke chan struct{}
	done chan struct{}
	// fwdSlots bounds challenge forwards in flight; fwdTimeout bounds
	// each (challengeTimeout; tests shorten it).
	fwdSlots   chan struct{}
	fwdTimeout time.Duration
	static     []*x509.Certificate // Config.Certificates

	maint     chan struct{} // asks for a storage maintenance pass (reseal.go)
	maintDone chan struct{}

	mu      sync.Mutex
	managed map[string]bool // names handed to certmagic
	reload  map[string]bool // names whose certificate changed in storage
	waiting map[string]string
	lastErr map[string]string
	// Re-issues (reseal.go): running, when to try again after a failure,
	// names to reload here although this machine issues them, and how
	// many succeeded.
	reissuing  map[string]bool
	retryAt    map[string]time.Time
	backoff    map[string]time.Duration
	reloadSelf map[string]bool
	mismatch   map[string]time.Time // names whose stored key and certificate differ, since
	reissued   int
	revoked    int  // replaced certificates revoked
	retrySet   bool // a pass is scheduled for reloads that wait for their records
}

func newCertManager(ctx context.Context, in *Ingress) (*certManager, error) {
	c := in.cfg.ACME
	if c.Directory == "" {
		c.Directory = LetsEncrypt
	}
	cm := &certManager{
		in: in, ctx: ctx, poke: make(chan struct{}, 1), done: make(chan struct{}),
		fwdSlots: make(chan struct{}, maxChallengeForwards), fwdTimeout: challengeTimeout,
		managed: map[string]bool{}, reload: map[string]bool{}, waiting: map[string]string{}, lastErr: map[string]string{},
		reissuing: map[string]bool{}, retryAt: map[string]time.Time{}, backoff: map[string]time.Duration{},
		reloadSelf: map[string]bool{}, mismatch: map[string]time.Time{}, maint: make(chan struct{}, 1), maintDone: make(chan struct{}),
		storage: &certStorage{st: in.cfg.State, self: in.cfg.MachineID, key: in.cfg.SealKey,
			recipients: in.sealRecipients, legacy: in.cfg.Secrets, everyone: in.everyone, log: in.log},
	}
	cm.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(c certmagic.Certificate) (*certmagic.Config, error) {
			if len(c.Names) > 0 && in.issuerOf(c.Names[0]) != in.cfg.MachineID {
				return cm.follower, nil
			}
			return cm.cfg, nil
		},
		RenewCheckInterval: c.RenewCheckInterval,
		Logger:             certmagicLogger(in.log),
	})
	cm.cfg = certmagic.New(cm.cache, certmagic.Config{
		Storage:            cm.storage,
		RenewalWindowRatio: c.RenewalWindowRatio,
		OnEvent:            cm.onEvent,
		OCSP:               certmagic.OCSPConfig{DisableStapling: true},
		Logger:             certmagicLogger(in.log),
	})
	// certmagic's own challenge listeners would collide with ours: point
	// it at our addresses, where it finds the port taken and relies on
	// our handlers (HandleHTTPChallenge and the TLS config).
	host, httpPort := splitHostPort(in.httpLn, 80)
	_, tlsPort := splitHostPort(in.tlsLn, 443)
	cm.acme = certmagic.NewACMEIssuer(cm.cfg, certmagic.ACMEIssuer{
		CA:                        c.Directory,
		Email:                     c.Email,
		Agreed:                    true,
		TrustedRoots:              c.RootCAs,
		DisableHTTPChallenge:      c.DisableHTTP01 || in.httpLn == nil,
		DisableTLSALPNChallenge:   c.DisableTLSALPN01 || in.tlsLn == nil,
		DisableDistributedSolvers: true, // the issuer answers; others forward to it
		ListenHost:                host,
		AltHTTPPort:               httpPort,
		AltTLSALPNPort:            tlsPort,
		Logger:                    certmagicLogger(in.log),
	})
	cm.cfg.Issuers = []certmagic.Issuer{cm.acme}
	ratio := c.RenewalWindowRatio
	if ratio == 0 {
		ratio = certmagic.DefaultRenewalWindowRatio
	}
	cm.follower = certmagic.New(cm.cache, certmagic.Config{
		Storage:            cm.storage,
		RenewalWindowRatio: ratio / 2,
		OnEvent:            cm.onEvent,
		OCSP:               certmagic.OCSPConfig{DisableStapling: true},
		Logger:             certmagicLogger(in.log),
		Issuers:            []certmagic.Issuer{cm.acme},
	})
	if c.OnDemand {
		cm.cfg.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: func(_ context.Context, name string) error {
			if !in.table.Load().servesName(name) {
				return fmt.Errorf("no route serves %q", name)
			}
			return nil
		}}
	}
	cm.forward = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(issuerAddrKey{}).(string)
			pr.Out.Header.Set(forwardedHeader, in.cfg.MachineID)
			pr.Out.Body, pr.Out.ContentLength = http.NoBody, 0
			pr.SetXForwarded()
		},
		Transport: &http.Transport{DialContext: in.fwd.transport.DialContext, DisableKeepAlives: true,
			ResponseHeaderTimeout: challengeTimeout, MaxResponseHeaderBytes: maxChallengeAnswer},
		ModifyResponse: func(resp *http.Response) error {
			if resp.ContentLength > maxChallengeAnswer {
				return fmt.Errorf("issuer's answer of %d bytes, at most %d", resp.ContentLength, maxChallengeAnswer)
			}
			resp.Body = limitedBody{io.LimitReader(resp.Body, maxChallengeAnswer), resp.Body}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			in.log.Warn("forward ACME challenge to the issuer", "host", r.Host, "err", err)
			plainError(w, http.StatusBadGateway, "502: the ingress machine that issues for this name did not answer\n")
		},
	}
	for _, c := range in.cfg.Certificates {
		if _, err := cm.cfg.CacheUnmanagedTLSCertificate(ctx, c, nil); err != nil {
			return nil, fmt.Errorf("ingress: static certificate: %w", err)
		}
		if c.Leaf == nil && len(c.Certificate) > 0 {
			c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		if c.Leaf != nil {
			cm.static = append(cm.static, c.Leaf)
		}
	}
	go cm.run()
	go cm.maintainLoop()
	return cm, nil
}

type issuerAddrKey struct{}

func splitHostPort(ln net.Listener, def int) (string, int) {
	if ln == nil {
		return "", def
	}
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return "", def
	}
	host := ""
	if !a.IP.IsUnspecified() {
		host = a.IP.String()
	}
	return host, a.Port
}

func (cm *certManager) directory() string { return cm.acme.CA }

func (cm *certManager) stop() {
	<-cm.done
	<-cm.maintDone
	cm.cache.Stop()
}

// tlsConfig serves managed certificates, ALPN challenges, h2 and http/1.1.
func (cm *certManager) tlsConfig() *tls.Config {
	tc := cm.cfg.TLSConfig()
	tc.MinVersion = tls.VersionTLS12
	tc.GetConfigForClient = cm.getConfigForClient
	return tc
}

// onEvent logs certmagic's events and enforces the issuer rule: only the
// issuer of a name may start an order (obtain or renew) for it.
func (cm *certManager) onEvent(_ context.Context, event string, data map[string]any) error {
	log := cm.in.log
	switch event {
	case "cert_obtaining":
		name, _ := data["identifier"].(string)
		if issuer := cm.in.issuerOf(name); issuer != cm.in.cfg.MachineID {
			// No retry: certmagic's retry loop would hold the name's
			// renewal job for minutes; the issuer's certificate arrives
			// through the state and is loaded then (storageChanged).
			return certmagic.ErrNoRetry{Err: fmt.Errorf("machine %s issues certificates for %s; this machine waits for it in the shared state", issuer, name)}
		}
		log.Info("ordering certificate", "name", name)
	case "cert_obtained":
		log.Info("certificate obtained", "name", data["identifier"], "renewal", data["renewal"])
		cm.setErr(fmt.Sprint(data["identifier"]), "")
	case "cert_failed":
		log.Warn("certificate order failed", "name", data["identifier"], "renewal", data["renewal"], "err", data["error"])
		cm.setErr(fmt.Sprint(data["identifier"]), fmt.Sprint(data["error"]))
	}
	return nil
}

func (cm *certManager) setErr(name, msg string) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if msg == "" {
		delete(cm.lastErr, name)
	} else {
		cm.lastErr[name] = msg
	}
}

// reconcile asks for a pass over the managed names (after a table swap).
func (cm *certManager) reconcile(*table) {
	select {
	case cm.poke <- struct{}{}:
	default:
	}
}

// storageChanged is called for every certificate record that arrives:
// a certificate another machine obtained may now be loadable here.
func (cm *certManager) storageChanged(key string) {
	// certmagic keys: certificates/<issuer>/<name>/<name>.{key,crt,json},
	// written in that order here, but another machine's replica may apply
	// them in any order (the state walks a received DAG from its newest
	// node). Any of the three asks for a reload, which waits until the
	// stored pair is whole, matches and differs from what is served
	// (storedPair).
	parts := strings.Split(strings.TrimPrefix(key, record.CertsPrefix), "/")
	if len(parts) == 4 && parts[0] == "certificates" && slices.Contains(
		[]string{parts[2] + ".json", parts[2] + ".crt", parts[2] + ".key"}, parts[3]) {
		cm.mu.Lock()
		cm.reload[parts[2]] = true
		cm.mu.Unlock()
	}
	cm.reconcile(nil)
	cm.membershipChanged() // a blob may need re-wrapping
}

func (cm *certManager) run() {
	defer close(cm.done)
	for {
		select {
		case <-cm.ctx.Done():
			return
		case <-cm.poke:
		}
		cm.pass()
	}
}

// pass hands certmagic the names it should keep certificates for: the
// names this machine issues (certmagic orders or loads them), and the
// names another machine issues once their certificate is in storage
// (certmagic loads them, and at renewal time reloads what the issuer
// renewed). A name no route serves any more is dropped.
func (cm *certManager) pass() {
	if cm.in.cfg.ACME.Disable {
		return
	}
	var want []string
	for _, name := range cm.in.table.Load().managedNames() {
		if !slices.ContainsFunc(cm.static, func(c *x509.Certificate) bool { return c.VerifyHostname(name) == nil }) {
			want = append(want, name)
		}
	}
	self := cm.in.cfg.MachineID
	cm.mu.Lock()
	defer cm.mu.Unlock()
	for name := range cm.managed {
		if !slices.Contains(want, name) {
			cm.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: name}})
			delete(cm.managed, name)
		}
	}
	clear(cm.waiting)
	reload := cm.reload
	cm.reload = map[string]bool{}
	for _, name := range want {
		issuer := cm.in.issuerOf(name)
		if cm.managed[name] && (reload[name] && (issuer != self || len(cm.cache.AllMatchingCertificates(name)) == 0) ||
			cm.reloadSelf[name]) {
			// The issuer renewed (or re-issued, or its blobs were just
			// re-wrapped so that this machine can open them): load the
			// certificate now instead of at this machine's own renewal
			// time. Loading is synchronous in ManageAsync, so the name is
			// without a certificate only for a moment; but only once the
			// stored key and certificate open and match: the records of
			// one write arrive one by one, and two writers can leave a
			// mixed pair for a while (reseal.go repairs it). Meanwhile the
			// certificate in memory keeps being served.
			switch cm.storedPair(name) {
			case pairServed:
				delete(cm.reloadSelf, name)
				continue
			case pairIncomplete:
				cm.reload[name] = true
				if !cm.retrySet {
					cm.retrySet = true
					time.AfterFunc(2*time.Second, func() {
						cm.mu.Lock()
						cm.retrySet = false
						cm.mu.Unlock()
						cm.reconcile(nil)
					})
				}
				continue
			}
			cm.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: name}})
			delete(cm.managed, name)
			delete(cm.reloadSelf, name)
		}
		if cm.managed[name] {
			continue
		}
		if issuer != self && !cm.storage.Exists(cm.ctx, certmagic.StorageKeys.SiteMeta(cm.acme.IssuerKey(), name)) {
			cm.waiting[name] = issuer
			continue
		}
		cfg := cm.cfg
		if issuer != self {
			cfg = cm.follower
		}
		if err := cfg.ManageAsync(cm.ctx, []string{name}); err != nil {
			cm.lastErr[name] = err.Error()
			cm.in.log.Warn("manage certificate", "name", name, "err", err)
			continue
		}
		cm.managed[name] = true
	}
}

const (
	pairNew        = iota // whole, matching, not the one served: reload
	pairServed            // already served here
	pairIncomplete        // missing, unreadable, or key and certificate differ
)

// storedPair says whether name's stored certificate is worth loading.
func (cm *certManager) storedPair(name string) int {
	ik := cm.acme.IssuerKey()
	crt, err1 := cm.storage.Load(cm.ctx, certmagic.StorageKeys.SiteCert(ik, name))
	key, err2 := cm.storage.Load(cm.ctx, certmagic.StorageKeys.SitePrivateKey(ik, name))
	if err1 != nil || err2 != nil || !cm.storage.Exists(cm.ctx, certmagic.StorageKeys.SiteMeta(ik, name)) {
		return pairIncomplete
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return pairIncomplete
	}
	for _, c := range cm.cache.AllMatchingCertificates(name) {
		if len(c.Certificate.Certificate) > 0 && bytes.Equal(c.Certificate.Certificate[0], pair.Certificate[0]) {
			return pairServed
		}
	}
	return pairNew
}

// CertInfo is the certificate state of a name.
type CertInfo struct {
	Name     string
	State    string // valid, expired, ordering, waiting for <machine>, none
	Issuer   string // the machine that orders it
	NotAfter time.Time
	Error    string
}

func (cm *certManager) info(name string) CertInfo {
	ci := CertInfo{Name: name, Issuer: cm.in.issuerOf(name), State: "none"}
	cm.mu.Lock()
	ci.Error = cm.lastErr[name]
	waiting, isWaiting := cm.waiting[name]
	managed := cm.managed[name]
	cm.mu.Unlock()
	for _, c := range cm.cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && c.Leaf.NotAfter.After(ci.NotAfter) {
			ci.NotAfter = c.Leaf.NotAfter
		}
	}
	switch {
	case !ci.NotAfter.IsZero() && time.Now().After(ci.NotAfter):
		ci.State = "expired"
	case !ci.NotAfter.IsZero():
		ci.State = "valid"
	case isWaiting:
		ci.State = "waiting for " + waiting
	case managed:
		ci.State = "ordering"
	}
	return ci
}

// serveChallenge answers /.well-known/acme-challenge/ on plain HTTP: the
// issuer of the name answers from its pending challenges; another machine
// passes the request to the issuer over the mesh. It reports false when
// the request is not a challenge this ingress knows (then it is routed
// like any other request): a name no https route publishes is never
// forwarded, nor anything but a GET or HEAD of a token-shaped path.
func (cm *certManager) serveChallenge(w http.ResponseWriter, r *http.Request) bool {
	name := strings.ToLower(hostOnly(r.Host))
	if !cm.in.table.Load().ordersFor(name, cm.in.cfg.ACME.OnDemand) {
		return false
	}
	issuer := cm.in.issuerOf(name)
	if issuer == cm.in.cfg.MachineID || r.Header.Get(forwardedHeader) != "" {
		return cm.acme.HandleHTTPChallenge(w, r)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead || !tokenShaped(strings.TrimPrefix(r.URL.Path, acmeChallengePrefix)) {
		return false
	}
	addr, err := cm.in.peerAddr(issuer, false)
	if err != nil {
		cm.in.log.Warn("cannot forward ACME challenge", "host", name, "issuer", issuer, "err", err)
		return false
	}
	if !cm.takeSlot() {
		cm.in.log.Warn("ACME challenge not forwarded: too many in flight", "host", name, "max", maxChallengeForwards)
		plainError(w, http.StatusServiceUnavailable, "503: too many challenge requests in flight\n")
		return true
	}
	defer cm.freeSlot()
	cm.in.log.Info("forwarding ACME challenge to the issuer", "host", name, "issuer", issuer, "addr", addr)
	ctx, cancel := context.WithTimeout(r.Context(), cm.fwdTimeout)
	defer cancel()
	r = r.WithContext(context.WithValue(ctx, issuerAddrKey{}, addr))
	cm.forward.ServeHTTP(w, r)
	return true
}

func (cm *certManager) takeSlot() bool {
	select {
	case cm.fwdSlots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (cm *certManager) freeSlot() { <-cm.fwdSlots }

// tokenShaped: an ACME token is base64url, RFC 8555 §8.1.
func tokenShaped(tok string) bool {
	if tok == "" || len(tok) > maxChallengeToken {
		return false
	}
	for _, c := range []byte(tok) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// limitedBody reads at most a bound of an issuer's answer.
type limitedBody struct {
	io.Reader
	io.Closer
}
