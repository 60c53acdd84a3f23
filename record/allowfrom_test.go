package record

import (
	"strings"
	"testing"
)

func TestParseAllowFrom(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want AllowFrom
		err  string
	}{
		{"web", AllowFrom{AllowService, "web"}, ""},
		{"service:web", AllowFrom{AllowService, "web"}, ""},
		{" Web ", AllowFrom{AllowService, "web"}, ""},
		{"machine:m2", AllowFrom{AllowMachine, "m2"}, ""},
		{"ingress", AllowFrom{Kind: AllowIngress}, ""},
		{"group:x", AllowFrom{}, `unknown kind "group"`},
		{"machine:", AllowFrom{}, "is not a service or machine name"},
		{"web_1", AllowFrom{AllowService, "web_1"}, ""},
		{"_web", AllowFrom{}, "is not a service or machine name"},
		{"db.blog", AllowFrom{AllowService, "db.blog"}, ""}, // a project's service
		{"machine:m_1", AllowFrom{}, "is not a service or machine name"},
		{"10.0.0.0/8", AllowFrom{}, "is not a service or machine name"},
		{"", AllowFrom{}, "is not a service or machine name"},
	} {
		got, err := ParseAllowFrom(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAllowFrom(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseAllowFrom(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if back, err := ParseAllowFrom(got.String()); err != nil || back != got {
			t.Errorf("%q does not round-trip: %q -> %+v, %v", tc.in, got.String(), back, err)
		}
	}
	_, text, err := ParseAllowFromList([]string{"web", "service:web", "ingress", "machine:m2"})
	if err != nil || strings.Join(text, ",") != "web,ingress,machine:m2" {
		t.Errorf("list = %q, %v; want deduplicated canonical text", text, err)
	}
	if _, _, err := ParseAllowFromList(make([]string, 65)); err == nil {
		t.Error("65 entries accepted")
	}
}
