package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
)

// The signed variant: every replica has its own identity key and signs
// what it writes (crdt.Config.Signer), and checks every record it reads
// (crdt.Config.Verifier), as agents do since records are signed.

const benchNetwork = "converge-bench"

// signedLatency is latencies on n replicas that sign and verify: the first
// replica is the network's root and admits itself and every other; each
// replica writes its machine record (with its membership) and the timing
// starts once every replica believes all n members.
func signedLatency(ctx context.Context, log *slog.Logger, n, writes int) ([]time.Duration, error) {
	var recs []*record.Machine
	c, err := newClusterWith(ctx, log, n, func(c *cluster) error {
		var err error
		recs, err = admitAll(c, log)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer c.close()
	for i, r := range c.reps {
		if err := r.store.Load().Put(ctx, recs[i].Key(), recs[i]); err != nil {
			return nil, fmt.Errorf("write machine record of %s: %w", r.name, err)
		}
	}
	if err := waitMembers(ctx, c, 60*time.Second); err != nil {
		return nil, err
	}
	if _, err := c.waitEqual(ctx, 30*time.Second); err != nil {
		return nil, fmt.Errorf("machine records: %w", err)
	}
	// While the machine records spread, a replica refuses those whose
	// issuer it does not know yet; from here on nothing may be refused.
	before := make([]uint64, len(c.reps))
	for i, r := range c.reps {
		before[i] = refusals(r)
	}
	lats, err := timeWrites(ctx, c, writes)
	if err != nil {
		return nil, err
	}
	// A record a verifier refused would have been a 5 s outlier; say so
	// plainly instead.
	for i, r := range c.reps {
		if n := refusals(r) - before[i]; n > 0 {
			return nil, fmt.Errorf("%s refused %d records while timed: %v", r.name, n, r.verifier.(*trust.Verifier).Refused())
		}
	}
	return lats, nil
}

// admitAll gives every replica an identity key, a Signer and a Verifier,
// and returns each one's machine record with its membership issued by
// the first replica (the root, which issues its own).
func admitAll(c *cluster, log *slog.Logger) ([]*record.Machine, error) {
	type ident struct {
		pub    ed25519.PublicKey
		signer *trust.Signer
	}
	ids := make([]ident, len(c.reps))
	for i, r := range c.reps {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		ids[i] = ident{pub: pub, signer: trust.NewSigner(r.name, key)}
	}
	at := time.Now().Add(-time.Minute)
	recs := make([]*record.Machine, len(c.reps))
	for i, r := range c.reps {
		wg := make([]byte, 32)
		rand.Read(wg)
		m := &record.Machine{ID: r.name, Name: r.name, Subnet: meshaddr.Subnet(i + 1).String(),
			IdentityKey: trust.EncodeKey(ids[i].pub), WireGuardKey: trust.EncodeKey(ed25519.PublicKey(wg)),
			Endpoints: []string{r.node.Addr().String()}}
		ms, err := ids[0].signer.Issue(record.Membership{Network: benchNetwork, ID: m.ID, IdentityKey: m.IdentityKey,
			WireGuardKey: m.WireGuardKey, Subnet: m.Subnet}, at.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("admit %s: %w", r.name, err)
		}
		m.Membership = ms
		recs[i] = m
		v, err := trust.NewVerifier(trust.Config{Network: benchNetwork, Root: ids[0].pub, Log: log.With("replica", r.name)})
		if err != nil {
			return nil, err
		}
		r.signer, r.verifier = ids[i].signer, v
	}
	return recs, nil
}

// waitMembers waits until every replica's Verifier believes every replica.
func waitMembers(ctx context.Context, c *cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := ""
		for _, r := range c.reps {
			v := r.verifier.(*trust.Verifier)
			for _, o := range c.reps {
				if !v.Member(o.name) {
					missing = fmt.Sprintf("%s does not believe %s", r.name, o.name)
					break
				}
			}
			if missing != "" {
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("memberships did not replicate within %s: %s", timeout, missing)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// signedRows measures 20 signing and verifying replicas right after the
// unsigned 20-replica figure (whose samples are unsigned), pairs times
// (further pairs add an unsigned round each, so both sides see the same
// drift of the machine's load), and returns the signed figure's row and
// the comparison's row. Each side's writes are pooled before taking
// percentiles: a p99 of 100 writes is their second worst.
func signedRows(ctx context.Context, log *slog.Logger, pairs int, unsigned []time.Duration) (row, row) {
	const n, writes = 20, 100
	var signed []time.Duration
	var errs []string
	for i := range max(pairs, 1) {
		if i > 0 || len(unsigned) == 0 {
			lats, err := latencies(ctx, log, n, writes)
			if err != nil {
				errs = append(errs, "unsigned: "+err.Error())
				continue
			}
			unsigned = append(unsigned, lats...)
		}
		lats, err := signedLatency(ctx, log, n, writes)
		if err != nil {
			errs = append(errs, "signed: "+err.Error())
			continue
		}
		signed = append(signed, lats...)
		u50, u99 := percentiles(sorted(unsigned[len(unsigned)-writes:]))
		s50, s99 := percentiles(lats)
		fmt.Fprintf(os.Stderr, "  pair %d: unsigned p50 %s p99 %s, signed p50 %s p99 %s\n", i+1, ms(u50), ms(u99), ms(s50), ms(s99))
	}
	method := fmt.Sprintf("as the 20-replica row, each replica with its own identity key, Signer and Verifier; %d machine records with memberships from the root replica replicated first", n)
	if len(signed) == 0 || len(unsigned) == 0 {
		msg := "error: " + strings.Join(errs, "; ")
		return row{figure: "write→visible everywhere, 20 replicas, signed", value: msg, method: method},
			row{figure: "added by signatures, 20 replicas", value: msg}
	}
	pooled := ""
	if pairs > 1 {
		pooled = fmt.Sprintf(" (%d signed and %d unsigned writes pooled)", len(signed), len(unsigned))
	}
	u50, u99 := percentiles(sorted(unsigned))
	s50, s99 := percentiles(sorted(signed))
	return row{
			figure: "write→visible everywhere, 20 replicas, signed",
			value:  fmt.Sprintf("p50 %s, p99 %s", ms(s50), ms(s99)),
			target: "p99 < 500 ms", method: method + pooled,
			ok: s99 < 500*time.Millisecond && len(errs) == 0,
		}, row{
			figure: "added by signatures, 20 replicas",
			value: fmt.Sprintf("p50 %+.1f ms (%.2f×), p99 %+.1f ms (%.2f×)",
				float64(s50-u50)/1e6, float64(s50)/float64(u50), float64(s99-u99)/1e6, float64(s99)/float64(u99)),
			target: "-", method: fmt.Sprintf("signed minus unsigned (p50 %s, p99 %s), same run", ms(u50), ms(u99)) + pooled,
			ok: len(errs) == 0,
		}
}

func sorted(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

func refusals(r *replica) uint64 {
	var n uint64
	for _, k := range r.verifier.(*trust.Verifier).Refused() {
		n += k
	}
	return n
}
