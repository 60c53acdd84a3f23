package membership

import (
	"maps"
	"strings"
	"testing"
)

func TestLabels(t *testing.T) {
	got := changeLabels(map[string]string{"disk": "hdd", "zone": "a"}, map[string]string{"disk": "ssd", "gpu": "yes"}, []string{"zone"})
	if want := map[string]string{"disk": "ssd", "gpu": "yes"}; !maps.Equal(got, want) {
		t.Errorf("changeLabels = %v, want %v", got, want)
	}
	if got := changeLabels(map[string]string{"a": "1"}, nil, []string{"a"}); got != nil {
		t.Errorf("all removed: %v, want nil", got)
	}
	for _, tc := range []struct {
		set     map[string]string
		rm      []string
		wantErr string
	}{
		{set: map[string]string{"com.example/disk": "ssd"}},
		{set: map[string]string{"": "x"}, wantErr: "1-128"},
		{set: map[string]string{"a b": "x"}, wantErr: "not allowed"},
		{set: map[string]string{"a": "x y"}, wantErr: "without spaces"},
		{rm: []string{"a=b"}, wantErr: "not allowed"},
	} {
		err := checkLabels(tc.set, tc.rm)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%v %v: %v, want %q", tc.set, tc.rm, err, tc.wantErr)
		}
	}
}
