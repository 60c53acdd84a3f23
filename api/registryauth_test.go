package api

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Credentials printed by mistake say which registry, never the secret.
func TestRegistryAuthRedacted(t *testing.T) {
	a := RegistryAuth{ServerAddress: "reg:5000", Username: "alice", Password: "s3cret", IdentityToken: "t0ken"}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("pull", "auth", a, "ptr", &a)
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, a), fmt.Sprint(&a), logs.String()} {
		if strings.Contains(s, "s3cret") || strings.Contains(s, "t0ken") || strings.Contains(s, "alice") {
			t.Errorf("secret printed: %s", s)
		}
	}
	h, err := a.Header()
	if err != nil || h == "" {
		t.Fatalf("Header = %q, %v", h, err)
	}
	var none *RegistryAuth
	if h, err := none.Header(); h != "" || err != nil {
		t.Errorf("nil credentials: %q %v", h, err)
	}
}
