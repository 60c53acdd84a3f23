package record

import "testing"

func TestServiceIDs(t *testing.T) {
	for _, tc := range []struct {
		name, project, id, prefix string
	}{
		{"web", "", "web", "web"},
		{"web", "default", "web", "web"},
		{"db", "blog", "db.blog", "blog-db"},
		{"plausible_db", "analytics", "plausible_db.analytics", "analytics-plausible_db"},
		{"db", "a-very-long-project-name-that-goes-on-and-on-and-on", "db.a-very-long-project-name-that-goes-on-and-on-and-on", "db"},
	} {
		id := ServiceID(tc.name, tc.project)
		if id != tc.id {
			t.Errorf("ServiceID(%q, %q) = %q, want %q", tc.name, tc.project, id, tc.id)
		}
		if err := CheckServiceID(id); err != nil {
			t.Errorf("CheckServiceID(%q): %v", id, err)
		}
		name, project := SplitServiceID(id)
		if wantP := tc.project; name != tc.name || (wantP == "" && project != DefaultProject) || (wantP != "" && project != wantP) {
			t.Errorf("SplitServiceID(%q) = %q, %q", id, name, project)
		}
		if p := ContainerPrefix(id); p != tc.prefix {
			t.Errorf("ContainerPrefix(%q) = %q, want %q", id, p, tc.prefix)
		}
	}
	for _, bad := range []string{"", "Web", "db.", ".blog", "db.blog.x", "db.default", "db.machine", "_db", "db_", "db.my_app", "-db"} {
		if err := CheckServiceID(bad); err == nil {
			t.Errorf("CheckServiceID(%q) accepted", bad)
		}
	}
}
