package ingress

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// Keeping the certificate storage sealed for the ingress machines of now.
//
// Every ingress machine runs a maintenance pass after each membership
// change (machine records, the revoked set), after storage changes, and
// every half minute. It reads the clear headers of the blobs (who each is
// wrapped for, who could ever read it) and:
//
//   - re-wraps blobs whose recipients are not the current ingress
//     machines (one was added, lost the role, or was removed), keeping
//     the exposure history;
//   - re-issues a certificate whose private key was readable by a machine
//     now in the revoked set (`machine rm`): a forced renewal, with a new
//     private key, through certmagic;
//   - deletes an ACME account whose key was readable by a removed machine,
//     so the next order registers a new account (the old one could
//     otherwise revoke the re-issued certificates). Re-issues wait until
//     no such account is left.
//
// Who acts, so that a name's blobs have one writer at a time:
//
//   - the blobs of a certificate: the issuer of its name (issuer.go),
//     which also renews it, so a re-wrap never races a renewal of another
//     machine. Only when
//     the issuer cannot open them (it was not a recipient, e.g. it just
//     got the role) does the lowest live ingress machine that can
//     re-wrap them; the issuer cannot be renewing a certificate it
//     cannot load. If no live machine can open them, the issuer orders a
//     new certificate.
//   - everything else (ACME accounts): the lowest live ingress machine
//     that can open it; deleting a compromised account needs no key, so
//     the lowest live ingress machine does it.
//
// Two machines may briefly disagree (a view still replicating): then both
// re-wrap or both re-issue, which writes the same kind of result twice and
// costs at most one extra order; the last write wins everywhere.

// maintainEvery is the pass interval when nothing pokes it.
const maintainEvery = 30 * time.Second

// reissueBackoff bounds how often a failing re-issue is retried.
const (
	reissueBackoffMin = 15 * time.Second
	reissueBackoffMax = 15 * time.Minute
)

// sealRecipients are the machines certificate storage is sealed for now:
// this machine, and every machine whose record has the ingress role and a
// sealing key and that is not revoked.
func (in *Ingress) sealRecipients() []sealing.Recipient {
	out := []sealing.Recipient{{ID: in.cfg.MachineID, Key: in.cfg.SealKey.PublicKey()}}
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(in.v.machines)) {
		m := in.v.machines[id]
		if id == in.cfg.MachineID || in.v.revoked[id] || !slices.Contains(m.Roles, IngressRole) || m.SealKey == "" {
			continue
		}
		k, err := sealing.ParsePublic(m.SealKey)
		if err != nil {
			in.log.Warn("ingress machine's sealing key unusable: it cannot read certificates", "machine", id, "err", err)
			continue
		}
		out = append(out, sealing.Recipient{ID: id, Key: k})
	}
	return out
}

// everyone is every machine the network has known (records and revoked):
// each held the network secret that format 1 blobs were sealed with.
func (in *Ingress) everyone() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := slices.Collect(maps.Keys(in.v.machines))
	out = append(out, slices.Collect(maps.Keys(in.v.revoked))...)
	out = append(out, in.cfg.MachineID)
	slices.Sort(out)
	return slices.Compact(out)
}

func (in *Ingress) revokedSet() map[string]bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return maps.Clone(in.v.revoked)
}

// membershipChanged asks for a maintenance pass.
func (cm *certManager) membershipChanged() {
	select {
	case cm.maint <- struct{}{}:
	default:
	}
}

func (cm *certManager) maintainLoop() {
	defer close(cm.maintDone)
	tick := time.NewTicker(maintainEvery)
	defer tick.Stop()
	for {
		select {
		case <-cm.ctx.Done():
			return
		case <-cm.maint:
		case <-tick.C:
		}
		// Let a burst settle (a removal writes the revoked record, deletes
		// the machine record; a re-wrap writes three blobs).
		select {
		case <-cm.ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		cm.maintain()
	}
}

// blob is one storage record with its parsed header.
type blob struct {
	rec    *record.Cert
	legacy bool // format 1: opened with the network secret
	hdr    sealing.Header
}

func (b blob) wrappedFor(id string) bool {
	return b.legacy || slices.Contains(b.hdr.RecipientIDs(), id)
}

func (b blob) exposedTo(set map[string]bool) bool {
	return slices.ContainsFunc(b.hdr.Exposed, func(id string) bool { return set[id] })
}

// certGroup is the blobs of one certificate: certificates/<ca>/<name>/.
type certGroup struct {
	ca, name string
	blobs    []blob
}

func (g *certGroup) key() *blob {
	for i, b := range g.blobs {
		if strings.HasSuffix(b.rec.Name, "/"+g.name+".key") {
			return &g.blobs[i]
		}
	}
	return nil
}

func (cm *certManager) maintain() {
	ctx, in := cm.ctx, cm.in
	self := in.cfg.MachineID
	recips := cm.storage.recipients()
	want := make([]string, len(recips))
	for i, r := range recips {
		want[i] = r.ID
	}
	slices.Sort(want)
	isRecipient := func(id string) bool { _, ok := slices.BinarySearch(want, id); return ok }
	revoked := in.revokedSet()
	live := *in.issuers.Load() // sorted, this machine included

	recs, err := in.cfg.State.List(ctx, record.CertsPrefix)
	if err != nil {
		in.log.Warn("certificate storage maintenance: list", "err", err)
		return
	}
	groups := map[string]*certGroup{}
	var others []blob
	for _, r := range recs {
		c, ok := r.(*record.Cert)
		if !ok || len(c.Data) == 0 {
			continue
		}
		b := blob{rec: c, legacy: c.Data[0] == legacyVersion}
		if !b.legacy {
			if b.hdr, err = sealing.ParseHeader(c.Data); err != nil {
				in.log.Warn("certificate storage maintenance: unreadable header", "key", c.Name, "err", err)
				continue
			}
		}
		parts := strings.Split(c.Name, "/")
		if len(parts) == 4 && parts[0] == "certificates" {
			gk := parts[1] + "/" + parts[2]
			if groups[gk] == nil {
				groups[gk] = &certGroup{ca: parts[1], name: parts[2]}
			}
			groups[gk].blobs = append(groups[gk].blobs, b)
			continue
		}
		others = append(others, b)
	}
	// current: wrapped for exactly the ingress machines of now.
	current := func(b blob) bool {
		return !b.legacy && slices.Equal(slices.Sorted(slices.Values(b.hdr.RecipientIDs())), want)
	}
	// opener: the lowest live ingress machine that can open b.
	opener := func(bs ...blob) string {
		for _, id := range live {
			if isRecipient(id) && !slices.ContainsFunc(bs, func(b blob) bool { return !b.wrappedFor(id) }) {
				return id
			}
		}
		return ""
	}

	// Accounts first: a compromised one is deleted before any re-issue,
	// so new certificates are ordered under a new account.
	accountsClean := true
	deadAccounts := map[string]bool{}
	for _, b := range others {
		if !strings.HasSuffix(b.rec.Name, ".key") || !b.exposedTo(revoked) {
			continue
		}
		accountsClean = false
		// Never re-wrapped: that could bring back what is being deleted.
		dir := b.rec.Name[:max(0, strings.LastIndexByte(b.rec.Name, '/'))]
		deadAccounts[dir] = true
		if len(live) > 0 && live[0] == self {
			in.log.Warn("ACME account key was readable by a removed machine: deleting the account here; the next order registers a new one",
				"account", dir, "exposed", b.hdr.Exposed)
			if err := cm.storage.Delete(ctx, dir); err != nil {
				in.log.Warn("delete compromised ACME account", "account", dir, "err", err)
			}
		}
	}
	for _, b := range others {
		if current(b) || deadAccounts[b.rec.Name[:max(0, strings.LastIndexByte(b.rec.Name, '/'))]] {
			continue
		}
		if opener(b) == self {
			cm.rewrap(ctx, b)
		}
	}

	for _, gk := range slices.Sorted(maps.Keys(groups)) {
		g := groups[gk]
		// Key first, metadata last, as certmagic writes them (a replica
		// may still apply them in another order; see storageChanged).
		slices.SortFunc(g.blobs, func(a, b blob) int { return rewrapOrder(a.rec.Name) - rewrapOrder(b.rec.Name) })
		issuer := in.issuerOf(g.name)
		cm.mu.Lock()
		busy := cm.reissuing[g.name]
		cm.mu.Unlock()
		if busy {
			continue
		}
		cm.adoptStored(g.name, issuer == self)
		k := g.key()
		compromised := k != nil && k.exposedTo(revoked)
		stale := slices.ContainsFunc(g.blobs, func(b blob) bool { return !current(b) })
		selfCan := !slices.ContainsFunc(g.blobs, func(b blob) bool { return !b.wrappedFor(self) })
		if issuer != self {
			// Help only an issuer that cannot open the blobs (it is then
			// not renewing them); a compromised key is the issuer's to
			// replace.
			issuerCan := !slices.ContainsFunc(g.blobs, func(b blob) bool { return !b.wrappedFor(issuer) })
			if stale && !compromised && !issuerCan && opener(g.blobs...) == self {
				for _, b := range g.blobs {
					cm.rewrap(ctx, b)
				}
			}
			continue
		}
		// Re-issue only what a route still serves, with ACME on.
		served := !in.cfg.ACME.Disable && in.table.Load().servesName(g.name)
		switch {
		case compromised && served && accountsClean:
			cm.startReissue(g, selfCan, "its private key was readable by a removed machine")
		case compromised:
			// Wait: for the account to be replaced, or for a route again.
		case stale && selfCan:
			for _, b := range g.blobs {
				cm.rewrap(ctx, b)
			}
		case !selfCan && opener(g.blobs...) == "" && served:
			cm.startReissue(g, false, "no live ingress machine can open its stored key")
		case selfCan && served && cm.mismatched(ctx, g):
			cm.startReissue(g, true, "its stored key and certificate do not match (two machines wrote them at once)")
		}
	}
}

// pairSettle is how long a key and certificate that do not match may
// stay so before the issuer re-issues: the blobs of one write arrive one
// by one.
const pairSettle = 20 * time.Second

// mismatched reports whether the name's stored key and certificate have
// not matched for pairSettle. Two machines that both ordered (views that
// disagreed for a moment) write both blobs, and the state keeps the last
// write of each record on its own, so the pair can end up mixed; only the
// issuer's new order repairs it.
func (cm *certManager) mismatched(ctx context.Context, g *certGroup) bool {
	crt, err1 := cm.storage.Load(ctx, certmagic.StorageKeys.SiteCert(g.ca, g.name))
	key, err2 := cm.storage.Load(ctx, certmagic.StorageKeys.SitePrivateKey(g.ca, g.name))
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if err1 != nil || err2 != nil {
		delete(cm.mismatch, g.name)
		return false
	}
	if _, err := tls.X509KeyPair(crt, key); err == nil {
		delete(cm.mismatch, g.name)
		return false
	}
	since, ok := cm.mismatch[g.name]
	if !ok {
		cm.mismatch[g.name] = time.Now()
		return false
	}
	if time.Since(since) < pairSettle {
		return false
	}
	delete(cm.mismatch, g.name)
	return true
}

// rewrapOrder puts the key first and the metadata last.
func rewrapOrder(name string) int {
	switch {
	case strings.HasSuffix(name, ".key"):
		return 0
	case strings.HasSuffix(name, ".json"):
		return 2
	}
	return 1
}

// rewrap seals a blob's content again for the ingress machines of now,
// keeping its exposure history. A format 1 blob is re-sealed by Load.
func (cm *certManager) rewrap(ctx context.Context, b blob) {
	if b.legacy {
		cm.storage.Load(ctx, b.rec.Name)
		return
	}
	plain, exposed, err := cm.storage.open(b.rec)
	if err != nil {
		cm.in.log.Warn("re-wrap certificate storage", "key", b.rec.Name, "err", err)
		return
	}
	if err := cm.storage.store(ctx, b.rec.Name, plain, exposed); err != nil {
		cm.in.log.Warn("re-wrap certificate storage", "key", b.rec.Name, "err", err)
		return
	}
	cm.in.log.Info("certificate storage re-wrapped for the ingress machines", "key", b.rec.Name,
		"was", b.hdr.RecipientIDs())
}

// startReissue replaces a certificate with a new private key, in the
// background: a forced renewal when this machine can load the old one,
// else a new order once the old blobs are gone.
func (cm *certManager) startReissue(g *certGroup, canLoad bool, why string) {
	cm.mu.Lock()
	if cm.reissuing[g.name] || time.Now().Before(cm.retryAt[g.name]) {
		cm.mu.Unlock()
		return
	}
	cm.reissuing[g.name] = true
	cm.mu.Unlock()
	log := cm.in.log.With("name", g.name)
	log.Warn("re-issuing certificate", "why", why)
	go func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(cm.ctx, 5*time.Minute)
		defer cancel()
		var err error
		var oldCrt, oldKey []byte
		if canLoad {
			oldCrt, _ = cm.storage.Load(ctx, certmagic.StorageKeys.SiteCert(g.ca, g.name))
			oldKey, _ = cm.storage.Load(ctx, certmagic.StorageKeys.SitePrivateKey(g.ca, g.name))
			err = cm.cfg.RenewCertSync(ctx, g.name, true)
		} else {
			if err = cm.storage.Delete(ctx, "certificates/"+g.ca+"/"+g.name); err == nil {
				err = cm.cfg.ObtainCertSync(ctx, g.name)
			}
		}
		cm.mu.Lock()
		delete(cm.reissuing, g.name)
		if err != nil {
			wait := min(max(2*cm.backoff[g.name], reissueBackoffMin), reissueBackoffMax)
			cm.backoff[g.name] = wait
			cm.retryAt[g.name] = time.Now().Add(wait)
			cm.lastErr[g.name] = "re-issue: " + err.Error()
		} else {
			delete(cm.backoff, g.name)
			delete(cm.retryAt, g.name)
			cm.reloadSelf[g.name] = true
			cm.reissued++
		}
		cm.mu.Unlock()
		if err != nil {
			log.Warn("re-issue failed", "err", err)
		} else {
			log.Info("certificate re-issued with a new private key", "took", time.Since(start).Round(time.Millisecond))
			cm.revokeOld(ctx, g.name, oldCrt, oldKey)
		}
		cm.reconcile(nil)
		cm.membershipChanged()
	}()
}

// revokeOld revokes the certificate a re-issue replaced: whoever kept
// its private key could otherwise still present it until it expires. The
// request is signed with that private key itself (RFC 8555 §7.6), which
// CAs accept for any account and with reason keyCompromise; the account
// that ordered it was deleted if a removed machine could read it.
func (cm *certManager) revokeOld(ctx context.Context, name string, crtPEM, keyPEM []byte) {
	fail := func(err error) { cm.in.log.Warn("replaced certificate not revoked", "name", name, "err", err) }
	if len(crtPEM) == 0 || len(keyPEM) == 0 {
		fail(errors.New("its stored copy did not open here"))
		return
	}
	blk, _ := pem.Decode(crtPEM)
	if blk == nil {
		fail(errors.New("stored certificate is not PEM"))
		return
	}
	crt, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		fail(err)
		return
	}
	key, err := certmagic.PEMDecodePrivateKey(keyPEM)
	if err != nil {
		fail(err)
		return
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		fail(fmt.Errorf("private key is a %T", key))
		return
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if roots := cm.in.cfg.ACME.RootCAs; roots != nil {
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	}
	client := &acme.Client{Directory: cm.acme.CA, HTTPClient: hc, Logger: cm.in.log}
	const keyCompromise = 1 // RFC 5280 CRLReason
	if err := client.RevokeCertificate(ctx, acme.Account{}, crt, signer, keyCompromise); err != nil {
		fail(err)
		return
	}
	cm.mu.Lock()
	cm.revoked++
	cm.mu.Unlock()
	cm.in.log.Info("replaced certificate revoked (key compromise)", "name", name, "serial", fmt.Sprintf("%x", crt.SerialNumber))
}

// adoptStored is the level-triggered side of storageChanged: when the
// stored certificate of a managed name is whole, matching and not the one
// served here (a write by another machine won, or its records arrived
// without this machine reloading), load it, so every ingress machine ends
// up serving what the state holds.
func (cm *certManager) adoptStored(name string, self bool) {
	cm.mu.Lock()
	managed := cm.managed[name]
	cm.mu.Unlock()
	if !managed || cm.storedPair(name) != pairNew {
		return
	}
	cm.mu.Lock()
	cm.reload[name] = true
	if self {
		cm.reloadSelf[name] = true
	}
	cm.mu.Unlock()
	cm.in.log.Info("stored certificate differs from the one served here: loading it", "name", name)
	cm.reconcile(nil)
}
