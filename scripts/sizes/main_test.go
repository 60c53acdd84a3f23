package main

import "testing"

func TestPackageAndModuleOf(t *testing.T) {
	modules := []string{"github.com/uncloud-mesh/uncloud", "gopkg.in/yaml.v3", "github.com/docker/docker", "github.com/docker/docker/api"}
	for _, tc := range []struct{ sym, pkg, module string }{
		{"github.com/docker/docker/client.(*Client).Ping", "github.com/docker/docker/client", "github.com/docker/docker"},
		{"github.com/docker/docker/api/types.Info", "github.com/docker/docker/api/types", "github.com/docker/docker/api"}, // the longest module wins
		{"type:*github.com/uncloud-mesh/uncloud/record.Machine", "github.com/uncloud-mesh/uncloud/record", "github.com/uncloud-mesh/uncloud"},
		{"type:.eq.github.com/uncloud-mesh/uncloud/api.Status", "github.com/uncloud-mesh/uncloud/api", "github.com/uncloud-mesh/uncloud"},
		{"gopkg.in/yaml%2ev3.(*parser).parse", "gopkg.in/yaml.v3", "gopkg.in/yaml.v3"},
		{"type:[16]github.com/docker/docker/client.x", "github.com/docker/docker/client", "github.com/docker/docker"},
		{"main.agentCall[go.shape.struct {}]", "main", "github.com/uncloud-mesh/uncloud"},
		{"net/http.(*Transport).roundTrip", "net/http", "std"},
		{"vendor/golang.org/x/net/idna.idnaValues", "vendor/golang.org/x/net/idna", "std"},
		{"go:string.*", "", "(compiler-made: strings, anonymous types, type links)"},
		{"type:struct { sync.Once; crypto/x509.v *crypto/x509.CertPool }", "", "(compiler-made: strings, anonymous types, type links)"},
		{"runtime.mheap_", "runtime", "std"},
	} {
		pkg := packageOf(tc.sym)
		if pkg != tc.pkg {
			t.Errorf("packageOf(%q) = %q, want %q", tc.sym, pkg, tc.pkg)
			continue
		}
		if m := moduleOf(pkg, modules); m != tc.module {
			t.Errorf("moduleOf(%q) = %q, want %q", pkg, m, tc.module)
		}
	}
}
