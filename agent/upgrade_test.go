package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestParseVersionLine(t *testing.T) {
	for _, tc := range []struct {
		line, want, version, err string
	}{
		{"uncloud v1.2.0 (commit abc) linux/amd64 go1.24.1\n", "linux/amd64", "v1.2.0", ""},
		{"uncloud dev (commit unknown) linux/arm64 go1.24.1", "linux/amd64", "", "built for linux/arm64, this machine is linux/amd64"},
		{"Usage: something else", "linux/amd64", "", "not an uncloud version line"},
		{"", "linux/amd64", "", "not an uncloud version line"},
	} {
		got, err := parseVersionLine(tc.line, tc.want)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.version {
			t.Errorf("%q: %q, %v; want %q", tc.line, got, err, tc.version)
		}
	}
}

// TestReceiveBinary: a binary is kept only when its digest matches and
// its `version` runs here for this platform; a refused one leaves nothing.
func TestReceiveBinary(t *testing.T) {
	script := func(platform string) []byte {
		return []byte("#!/bin/sh\necho 'uncloud v9 (commit abc) " + platform + " go1.26'\n")
	}
	here := runtime.GOOS + "/" + runtime.GOARCH
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	good, other := script(here), script("plan9/mips")
	for _, tc := range []struct {
		name string
		body []byte
		sum  string
		size int64
		err  string
	}{
		{"accepted", good, sum(good), int64(len(good)), ""},
		{"digest mismatch", good, sum(other), int64(len(good)), "SHA-256"},
		{"short body", good[:10], sum(good), int64(len(good)), "received 10 bytes"},
		{"longer than declared", good, sum(good), 10, "received 11 bytes"},
		{"another platform", other, sum(other), int64(len(other)), "built for plan9/mips"},
		{"not uncloud", []byte("#!/bin/sh\necho hello\n"), sum([]byte("#!/bin/sh\necho hello\n")), 21, "not an uncloud version line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			installed := filepath.Join(dir, "uncloud")
			if err := os.WriteFile(installed, []byte("old"), 0o755); err != nil {
				t.Fatal(err)
			}
			path, version, err := receiveBinary(context.Background(), installed, tc.sum, tc.size, bytes.NewReader(tc.body))
			entries, _ := os.ReadDir(dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, api.ErrBadRequest) {
					t.Fatalf("err %v, want a bad request saying %q", err, tc.err)
				}
				if len(entries) != 1 {
					t.Errorf("a refused binary left files: %v", entries)
				}
				return
			}
			if err != nil || version != "v9" || filepath.Dir(path) != dir {
				t.Fatalf("%q %q %v", path, version, err)
			}
			if b, _ := os.ReadFile(installed); string(b) != "old" {
				t.Errorf("the installed binary changed")
			}
		})
	}
}
