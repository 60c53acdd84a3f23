package crdt

import (
	"context"
	"errors"
	"github.com/uncloud-mesh/uncloud/record"
	"testing"
	"time"
)

func TestRecordsAPI(t *testing.T) {
	s := openOffline(t)
	ctx := context.Background()
	recs := []Record{
		&record.Machine{ID: "m1", Name: "alpha", Subnet: "10.210.1.0/24", Endpoints: []string{"192.0.2.1:51820"}},
		&record.Container{MachineID: "m1", ID: "c1", Name: "web-1", Service: "web", Address: "10.210.1.2"},
		&record.Service{Name: "web", Mode: "replicated", Ports: []string{"app.example.com:8080/https"}},
		&record.Token{ID: "t1", Issuer: "m1", PublicKey: "pub", Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		&record.Revoked{MachineID: "m9", Name: "old", WireGuardKey: "wg", IdentityKey: "id", By: "m1", At: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, r := range recs {
		mustPut(t, s, r)
		got, err := s.Get(ctx, r.Key())
		if err != nil {
			t.Fatalf("get %s: %v", r.Key(), err)
		}
		if a, b := mustEncode(t, got), mustEncode(t, r); a != b {
			t.Errorf("round trip of %s: got %s want %s", r.Key(), a, b)
		}
	}
	all, err := s.List(ctx, "/")
	if err != nil || len(all) != 5 {
		t.Fatalf("list /: %d records, %v", len(all), err)
	}
	if l, _ := s.List(ctx, "/services/we"); len(l) != 1 {
		t.Errorf("list /services/we: %d records, want 1", len(l))
	}
	if l, _ := s.List(ctx, "/containers/m1/"); len(l) != 1 {
		t.Errorf("list /containers/m1/: %d records, want 1", len(l))
	}

	errTests := []struct {
		name string
		do   func() error
		want error
	}{
		{"key mismatch", func() error { return s.Put(ctx, "/machines/m2", &record.Machine{ID: "m1"}) }, record.ErrBadKey},
		{"slash in id", func() error { return s.Put(ctx, "/services/a/b", &record.Service{Name: "a/b"}) }, record.ErrBadRecord},
		{"empty id", func() error { return s.Put(ctx, "/machines/", &record.Machine{}) }, record.ErrBadRecord},
		{"nil record", func() error { return s.Put(ctx, "/machines/x", nil) }, record.ErrBadRecord},
		{"get outside scheme", func() error { _, err := s.Get(ctx, "/other/x"); return err }, record.ErrBadKey},
		{"get missing", func() error { _, err := s.Get(ctx, "/machines/nope"); return err }, ErrNotFound},
		{"delete outside scheme", func() error { return s.Delete(ctx, "/x") }, record.ErrBadKey},
		{"list relative", func() error { _, err := s.List(ctx, "machines"); return err }, record.ErrBadKey},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}

	// Records from a newer (or broken) binary.
	stored := []struct {
		key, raw string
		want     error
	}{
		{"/machines/v2", `{"kind":"machine","v":2,"data":{"id":"v2"}}`, ErrUnknownVersion},
		{"/machines/k", `{"kind":"robot","v":1,"data":{}}`, ErrUnknownKind},
		{"/machines/j", `not json`, record.ErrBadRecord},
		{"/machines/w", `{"kind":"machine","v":1,"data":{"id":"other"}}`, record.ErrBadRecord},
	}
	for _, st := range stored {
		if err := s.putRaw(ctx, st.key, []byte(st.raw)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, st.key); !errors.Is(err, st.want) {
			t.Errorf("get %s: %v, want %v", st.key, err, st.want)
		}
	}
	if l, _ := s.List(ctx, "/machines/"); len(l) != 1 {
		t.Errorf("list skips undecodable records: got %d, want 1", len(l))
	}
	if err := s.Delete(ctx, "/machines/m1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "/machines/m1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
}

func mustEncode(t *testing.T, r Record) string {
	b, err := encodeRecord(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
