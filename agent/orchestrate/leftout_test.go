package orchestrate

import (
	"slices"
	"testing"
)

func TestLeftOut(t *testing.T) {
	all := []Machine{
		{ID: "1", Name: "m1", State: "self"},
		{ID: "2", Name: "m2", State: "suspect"},
		{ID: "3", Name: "m3", State: "alive", Mode: "netstack"},
		{ID: "4", Name: "m4", State: "down"},
	}
	for _, tc := range []struct {
		name  string
		taken []Machine
		want  []string
	}{
		{"all taken", all, nil},
		{"only self", all[:1], []string{"m2: suspect from this machine", "m3: netstack mode runs no containers", "m4: down from this machine"}},
	} {
		if got := leftOut(all, tc.taken); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
