package record

import (
	"errors"
	"testing"
)

func TestKindsAreConsistent(t *testing.T) {
	seen := map[string]Kind{}
	for _, k := range Kinds() {
		info, ok := Lookup(k)
		if !ok {
			t.Fatalf("Lookup(%q) unknown", k)
		}
		if got := info.New().Kind(); got != k {
			t.Errorf("Lookup(%q).New() makes a %q record", k, got)
		}
		if other, dup := seen[info.Prefix]; dup {
			t.Errorf("kinds %q and %q share prefix %s", k, other, info.Prefix)
		}
		seen[info.Prefix] = k
	}
	if _, ok := Lookup("robot"); ok {
		t.Error("Lookup of an unknown kind succeeded")
	}
}

func TestCheckKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"/machines/m1", true},
		{"/containers/m1/c1", true},
		{"/services/web", true},
		{"/tokens/t1", true},
		{"/revoked/m9", true},
		{"/certs/certificates/ca/a.example/a.example.crt", true},
		{"/history/web", true},
		{"/secrets/db-password", true},
		{"/machines/", false}, // a prefix alone names nothing
		{"/other/x", false},
		{"machines/m1", false},
		{"", false},
	}
	for _, tc := range tests {
		err := CheckKey(tc.key)
		if tc.ok && err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", tc.key, err)
		}
		if !tc.ok && !errors.Is(err, ErrBadKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrBadKey", tc.key, err)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		r    Record
		ok   bool
	}{
		{"machine", &Machine{ID: "m1"}, true},
		{"machine without id", &Machine{}, false},
		{"machine id with slash", &Machine{ID: "a/b"}, false},
		{"machine id dot-dot", &Machine{ID: ".."}, false},
		{"container", &Container{MachineID: "m1", ID: "c1"}, true},
		{"container without machine", &Container{ID: "c1"}, false},
		{"service", &Service{Name: "web"}, true},
		{"service with NUL", &Service{Name: "we\x00b"}, false},
		{"token", &Token{ID: "t1"}, true},
		{"revoked", &Revoked{MachineID: "m9"}, true},
		{"revoked without id", &Revoked{}, false},
		{"cert", &Cert{Name: "certificates/ca/a.example/a.example.crt"}, true},
		{"cert with empty segment", &Cert{Name: "certificates//a"}, false},
		{"cert escaping", &Cert{Name: "../x"}, false},
		{"secret", &Secret{Name: "db_password", Version: "v1"}, true},
		{"config", &Secret{Name: SecretName("config", "nginx.conf"), Version: "v1"}, true},
		{"secret without version", &Secret{Name: "db"}, false},
		{"secret escaping", &Secret{Name: "../x", Version: "v1"}, false},
		{"secret with slash", &Secret{Name: "a/b", Version: "v1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if tc.ok && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrBadRecord) {
				t.Errorf("Validate() = %v, want ErrBadRecord", err)
			}
			if tc.ok {
				if err := CheckKey(tc.r.Key()); err != nil {
					t.Errorf("a valid record's key %q fails CheckKey: %v", tc.r.Key(), err)
				}
			}
		})
	}
}

func TestHistoryKeepsTen(t *testing.T) {
	h := &History{Service: "web"}
	for i := 1; i <= 13; i++ {
		h.Add(Version{Image: "nginx:1", Action: "deploy"})
	}
	if len(h.Versions) != HistoryKeep || h.Versions[0].N != 13 || h.Versions[HistoryKeep-1].N != 4 {
		t.Fatalf("versions %d, newest %d, oldest %d; want 10, 13, 4", len(h.Versions), h.Versions[0].N, h.Versions[len(h.Versions)-1].N)
	}
	if _, ok := h.Find(3); ok {
		t.Error("version 3 was trimmed but is found")
	}
	if err := h.Validate(); err != nil {
		t.Error(err)
	}
	h.Versions = append(h.Versions, Version{N: 1})
	if err := h.Validate(); err == nil {
		t.Error("a history of 11 versions validates")
	}
}
