package trust

import (
	"errors"
	"testing"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// TestSecretWriters: any member writes secrets and configs; a removed
// machine's writes count only where its removal kept them, and a
// signature does not carry over to other content.
func TestSecretWriters(t *testing.T) {
	w := newWorld(t)
	sec := &record.Secret{Name: "db_password", Version: "v1", Data: []byte("sealed")}
	kept := sign(t, sec, w.b.signer)
	w.remove(t, w.a, w.b, kept.Digest(), crdt.SignatureDigest(w.c.rec.Membership.Sig))
	v := w.verifier(t)
	for _, tc := range []struct {
		name string
		s    crdt.Signed
		want error
	}{
		{"by a member", sign(t, sec, w.c.signer), nil},
		{"by the root", sign(t, &record.Secret{Name: record.SecretName("config", "app.conf"), Version: "v2", Data: []byte("x")}, w.a.signer), nil},
		{"unsigned", sign(t, sec, nil), ErrUnsigned},
		{"removed machine, kept", kept, nil},
		{"removed machine, afterwards", sign(t, &record.Secret{Name: "db_password", Version: "v9", Data: []byte("planted")}, w.b.signer), ErrNotMember},
		{"signature moved to other content", func() crdt.Signed {
			s := sign(t, &record.Secret{Name: "db_password", Version: "v3", Data: []byte("other")}, w.c.signer)
			s.Sig = sign(t, sec, w.c.signer).Sig
			return s
		}(), ErrBadSig},
	} {
		err := v.Check(tc.s)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Check = %v, want %v", tc.name, err, tc.want)
		}
	}
}
