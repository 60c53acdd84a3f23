package orchestrate

import (
	"slices"
	"strings"
	"testing"
)

func TestShrink(t *testing.T) {
	cs := []victim{
		{ID: "1", Name: "w-1", Machine: "a", Running: true, Reachable: true},
		{ID: "2", Name: "w-2", Machine: "a", Running: true, Reachable: true},
		{ID: "3", Name: "w-3", Machine: "a", Running: true, Reachable: true},
		{ID: "4", Name: "w-4", Machine: "b", Running: false, Reachable: true},
		{ID: "5", Name: "w-5", Machine: "b", Running: true, Reachable: true},
		{ID: "6", Name: "w-6", Machine: "c", Running: true, Reachable: false},
		{ID: "7", Name: "w-7", Machine: "c", Running: true, Reachable: false},
	}
	ids := func(vs []victim) []string {
		var out []string
		for _, v := range vs {
			out = append(out, v.ID)
		}
		return out
	}
	for _, tc := range []struct {
		k    int
		want []string
	}{
		{1, []string{"4"}},                     // not running first
		{2, []string{"4", "1"}},                // then the fullest machine
		{3, []string{"4", "1", "2"}},           // a still has the most (2 vs b 1)
		{4, []string{"4", "1", "2", "3"}},      // a:1 b:1 c:2 but c unreachable; a before b by name
		{7, []string{"4", "1", "2", "3", "5"}}, // never the unreachable ones
	} {
		if got := ids(shrink(cs, tc.k)); !slices.Equal(got, tc.want) {
			t.Errorf("shrink(%d) = %v, want %v", tc.k, got, tc.want)
		}
	}
}

func TestPickTargets(t *testing.T) {
	all := []Machine{
		{ID: "id1", Name: "m1", State: "self", Mode: "kernel"},
		{ID: "id2", Name: "m2", State: "alive", Mode: "kernel"},
		{ID: "id3", Name: "m3", State: "down", Mode: "kernel"},
		{ID: "id4", Name: "m4", State: "alive", Mode: "netstack"},
	}
	names := func(ts []Machine) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		ask     []string
		want    []string
		wantErr string
	}{
		{"default: live kernel machines", nil, []string{"m1", "m2"}, ""},
		{"named, by name or ID, deduplicated", []string{"m3", "id2", "m2"}, []string{"m3", "m2"}, ""},
		{"named netstack machine kept (it refuses itself)", []string{"m4"}, []string{"m4"}, ""},
		{"unknown", []string{"m2", "nope"}, nil, `unknown machine "nope" (machines: m1, m2, m3, m4)`},
	} {
		got, err := pickTargets(all, tc.ask)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want error %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(names(got), tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, names(got), err, tc.want)
		}
	}
	if _, err := pickTargets([]Machine{{Name: "m4", State: "alive", Mode: "netstack"}}, nil); err == nil {
		t.Error("a network of netstack machines only: no error")
	}
}

func TestServiceNameFromImage(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                            "nginx",
		"nginx:1.27":                       "nginx",
		"registry.example.com:5000/a/b:v1": "b",
		"ghcr.io/x/My_App@sha256:abc":      "my-app",
		"uncloud-test/echo:1":              "echo",
		"___":                              "service",
	} {
		if got := serviceNameFromImage(in); got != want {
			t.Errorf("serviceNameFromImage(%q) = %q, want %q", in, got, want)
		}
	}
}
