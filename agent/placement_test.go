package agent

import (
	"slices"
	"testing"
)

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		name     string
		machines []string
		existing map[string]int
		n        int
		want     []string
	}{
		{"even", []string{"a", "b", "c"}, nil, 5, []string{"a", "b", "c", "a", "b"}},
		{"one machine", []string{"a"}, nil, 3, []string{"a", "a", "a"}},
		{"fills the emptiest first", []string{"a", "b", "c"}, map[string]int{"a": 2, "b": 1}, 3, []string{"c", "b", "c"}},
		{"existing elsewhere ignored", []string{"b"}, map[string]int{"a": 5}, 2, []string{"b", "b"}},
		{"no machines", nil, nil, 2, nil},
		{"nothing to place", []string{"a"}, nil, 0, nil},
	} {
		if got := spread(tc.machines, tc.existing, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("%s: spread = %v, want %v", tc.name, got, tc.want)
		}
	}
}

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
