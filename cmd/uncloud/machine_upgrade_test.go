package main

import (
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestUpgradeOrder(t *testing.T) {
	ms := []api.MachineInfo{
		{ID: "a", Name: "m1", State: "self"},
		{ID: "b", Name: "m2", State: "alive"},
		{ID: "c", Name: "m3", State: "alive"},
		{ID: "d", Name: "m4", State: "down"},
	}
	for _, tc := range []struct {
		name  string
		names []string
		all   bool
		want  string
		err   string
	}{
		{"named, self last", []string{"m1", "m3"}, false, "m3,m1", ""},
		{"by ID, once", []string{"b", "m2"}, false, "m2", ""},
		{"all with one down", nil, true, "", "m4 is down"},
		{"unknown", []string{"m9"}, false, "", `no machine "m9"`},
	} {
		got, err := upgradeOrder(ms, "a", tc.names, tc.all)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		var names []string
		for _, m := range got {
			names = append(names, m.Name)
		}
		if err != nil || strings.Join(names, ",") != tc.want {
			t.Errorf("%s: %v, %v; want %s", tc.name, names, err, tc.want)
		}
	}
	got, err := upgradeOrder(ms[:3], "a", nil, true)
	if err != nil || len(got) != 3 || got[2].Name != "m1" {
		t.Errorf("all: %v %v, want m1 last", got, err)
	}
}
