package ingress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"testing"

	"github.com/uncloud-mesh/uncloud/record"
)

func TestCertStorage(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &certStorage{st: st, self: "m1", keys: testSecret, log: log}
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
	got, err := s.Load(ctx, key)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("load: %q %v", got, err)
	}
	// The replicated record never holds the key in clear.
	rec, err := st.Get(ctx, record.CertsPrefix+key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(rec.(*record.Cert).Data, []byte("very secret")) {
		t.Fatal("private key stored in clear")
	}
	// Another network's secret cannot read it: treated as missing.
	other := &certStorage{st: st, self: "m9", keys: func() [][]byte { return [][]byte{[]byte("another network secret 32 bytes!")} }, log: log}
	if _, err := other.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load with the wrong secret: %v, want fs.ErrNotExist", err)
	}
	// After a rotation the old secret still opens what it sealed.
	rotated := &certStorage{st: st, keys: func() [][]byte { return [][]byte{[]byte("new"), testSecret()[0]} }, log: log}
	if got, err := rotated.Load(ctx, key); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("load after rotation: %v", err)
	}
	// ...and re-seals it under the new secret, so retiring the old one
	// loses nothing.
	retired := &certStorage{st: st, keys: func() [][]byte { return [][]byte{[]byte("new")} }, log: log}
	if got, err := retired.Load(ctx, key); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("load after the old secret retired: %v", err)
	}
	if err := s.Store(ctx, key, secret); err != nil { // back under the test secret
		t.Fatal(err)
	}
	// A blob moved to another name does not open (name is authenticated).
	moved := &record.Cert{Name: "certificates/ca/evil/evil.key", Data: rec.(*record.Cert).Data}
	put(t, st, moved)
	if _, err := s.Load(ctx, moved.Name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("moved blob opened: %v", err)
	}
	if _, err := s.Load(ctx, "certificates/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}

	if !s.Exists(ctx, "certificates/ca") || !s.Exists(ctx, key) || s.Exists(ctx, "certificates/c") {
		t.Fatal("Exists wrong for directory, file or partial name")
	}
	list, err := s.List(ctx, "certificates", false)
	if err != nil || !slices.Equal(list, []string{"certificates/ca"}) {
		t.Fatalf("list non-recursive: %v %v", list, err)
	}
	list, err = s.List(ctx, "certificates/ca", true)
	if err != nil || len(list) != 3 {
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
