package ingress

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"testing"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// testStorage is machine id's certificate storage, sealing for recips.
func testStorage(t *testing.T, st State, id string, recips ...string) *certStorage {
	return &certStorage{st: st, self: id, key: sealKeyOf(t, id), legacy: testSecret,
		recipients: func() []sealing.Recipient {
			var out []sealing.Recipient
			for _, r := range recips {
				out = append(out, sealing.Recipient{ID: r, Key: sealKeyOf(t, r).PublicKey()})
			}
			return out
		},
		everyone: func() []string { return []string{"m1", "m2", "m3", "gone"} },
		log:      slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// legacySeal writes format 1 (the network secret), as before per-machine
// sealing.
func legacySeal(t *testing.T, name string, plain []byte) []byte {
	aead, err := legacyKey(testSecret()[0])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 1+aead.NonceSize())
	out[0] = legacyVersion
	rand.Read(out[1:])
	return aead.Seal(out, out[1:], plain, []byte(name))
}

func TestCertStorage(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	s := testStorage(t, st, "m1", "m1", "m2")
	key := "certificates/ca/app.example.com/app.example.com.key"
	secret := []byte("-----BEGIN EC PRIVATE KEY----- very secret")
	if err := s.Store(ctx, key, secret); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "certificates/ca/app.example.com/app.example.com.crt", []byte("crt")); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "acme/ca/users/x/x.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who  string
		open bool
	}{{"m1", true}, {"m2", true}, {"m3", false}, {"gone", false}} {
		got, err := testStorage(t, st, c.who, "m1").Load(ctx, key)
		if c.open && (err != nil || !bytes.Equal(got, secret)) {
			t.Errorf("ingress machine %s: load %q %v", c.who, got, err)
		}
		if !c.open && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("machine %s (not a recipient) loads the key: %q %v", c.who, got, err)
		}
	}
	// The replicated record never holds the key in clear.
	rec, err := st.Get(ctx, record.CertsPrefix+key)
	if err != nil {
		t.Fatal(err)
	}
	old := rec.(*record.Cert).Data
	if bytes.Contains(old, []byte("very secret")) {
		t.Fatal("private key stored in clear")
	}
	// m2 leaves the ingress: the value sealed after that is not for it,
	// although the copy it kept still opens with its key (hence the
	// re-issue on removal, reseal.go).
	s = testStorage(t, st, "m1", "m1")
	if err := s.Store(ctx, key, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := testStorage(t, st, "m2", "m1").Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("m2 opens what was sealed after it left: %v", err)
	}
	if plain, _, err := sealing.Open(old, []byte(key), "m2", sealKeyOf(t, "m2")); err != nil || !bytes.Equal(plain, secret) {
		t.Fatalf("m2's kept copy: %v", err)
	}
	// A blob moved to another name does not open (name is authenticated).
	rec, _ = st.Get(ctx, record.CertsPrefix+key)
	moved := &record.Cert{Name: "certificates/ca/evil/evil.key", Data: rec.(*record.Cert).Data}
	put(t, st, moved)
	if _, err := s.Load(ctx, moved.Name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("moved blob opened: %v", err)
	}
	if _, err := s.Load(ctx, "certificates/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	// Format 1 (the network secret) is still read, and re-sealed for
	// the ingress machines, every machine of the network named exposed.
	lkey := "certificates/ca/old.example.com/old.example.com.key"
	put(t, st, &record.Cert{Name: lkey, Data: legacySeal(t, lkey, secret)})
	if got, err := s.Load(ctx, lkey); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("format 1: %q %v", got, err)
	}
	rec, _ = st.Get(ctx, record.CertsPrefix+lkey)
	h, err := sealing.ParseHeader(rec.(*record.Cert).Data)
	if err != nil || !slices.Equal(h.RecipientIDs(), []string{"m1"}) || !slices.Equal(h.Exposed, []string{"gone", "m1", "m2", "m3"}) {
		t.Fatalf("format 1 re-sealed: recipients %v exposed %v %v", h.RecipientIDs(), h.Exposed, err)
	}
	if _, err := testStorage(t, st, "m2", "m1").Load(ctx, lkey); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a member opens the re-sealed format 1 value: %v", err)
	}
	del(t, st, record.CertsPrefix+lkey)
	del(t, st, record.CertsPrefix+moved.Name)

	if !s.Exists(ctx, "certificates/ca") || !s.Exists(ctx, key) || s.Exists(ctx, "certificates/c") {
		t.Fatal("Exists wrong for directory, file or partial name")
	}
	list, err := s.List(ctx, "certificates", false)
	if err != nil || !slices.Equal(list, []string{"certificates/ca"}) {
		t.Fatalf("list non-recursive: %v %v", list, err)
	}
	list, err = s.List(ctx, "certificates/ca", true)
	if err != nil || len(list) != 2 {
		t.Fatalf("list recursive: %v %v", list, err)
	}
	info, err := s.Stat(ctx, key)
	if err != nil || !info.IsTerminal || info.Size == 0 {
		t.Fatalf("stat: %+v %v", info, err)
	}
	if err := s.Delete(ctx, "certificates/ca/app.example.com"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, key) || !s.Exists(ctx, "acme/ca/users/x/x.json") {
		t.Fatal("delete of a directory removed too little or too much")
	}

	// Locks are exclusive on this machine and honour the context.
	if err := s.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Lock(cctx, "l"); err == nil {
		t.Fatal("second lock acquired while held")
	}
	if err := s.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, "nope"); err == nil {
		t.Fatal("unlock of a free lock must fail")
	}
}

func TestCertRecordValidation(t *testing.T) {
	st := openStore(t)
	for _, name := range []string{"", "a//b", "../x", "a/./b", "a/"} {
		r := &record.Cert{Name: name}
		if err := st.Put(context.Background(), r.Key(), r); !errors.Is(err, record.ErrBadRecord) {
			t.Errorf("cert record %q: %v, want ErrBadRecord", name, err)
		}
	}
}
