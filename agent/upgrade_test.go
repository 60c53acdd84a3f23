package agent

import (
	"strings"
	"testing"
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
