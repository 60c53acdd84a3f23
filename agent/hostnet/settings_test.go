package hostnet

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/tun"
)

func ports(t *testing.T, specs ...string) []tun.ExposedPort {
	t.Helper()
	var out []tun.ExposedPort
	for _, s := range specs {
		p, err := tun.ParseExposedPort(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func ptr(s string) *string { return &s }

func TestParseListen(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"1080", "127.0.0.1:1080", ""},
		{":1080", "127.0.0.1:1080", ""},
		{" 3128 ", "127.0.0.1:3128", ""},
		{"localhost:1080", "127.0.0.1:1080", ""},
		{"127.0.0.2:1080", "127.0.0.2:1080", ""},
		{"[::1]:1080", "[::1]:1080", ""},
		{"0.0.0.0:1080", "0.0.0.0:1080", ""}, // asked for explicitly
		{"192.168.1.5:3128", "192.168.1.5:3128", ""},
		{"[::ffff:127.0.0.1]:1080", "127.0.0.1:1080", ""},
		{"", "", "empty"},
		{"0", "", "not 1..65535"},
		{"65536", "", "not 1..65535"},
		{"127.0.0.1:", "", "not 1..65535"},
		{"proxy.example.com:1080", "", "not an IP address"},
		{"127.0.0.1", "", "want PORT"},
		{"::1", "", "want PORT"},
		{"[fe80::1%eth0]:1080", "", "zones"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseListen(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseListen(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseListen(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseListenFlag(t *testing.T) {
	if p, err := ParseListenFlag("--socks5", ""); p != nil || err != nil {
		t.Fatalf("not given: %v, %v", p, err)
	}
	for _, off := range []string{"off", "OFF", "none"} {
		if p, err := ParseListenFlag("--socks5", off); err != nil || p == nil || *p != "" {
			t.Fatalf("%q: %v, %v; want off", off, p, err)
		}
	}
	if p, err := ParseListenFlag("--http-proxy", "3128"); err != nil || *p != "127.0.0.1:3128" {
		t.Fatalf("3128: %v, %v", p, err)
	}
	if _, err := ParseListenFlag("--http-proxy", "x"); err == nil || !strings.Contains(err.Error(), "--http-proxy") {
		t.Fatalf("bad value: %v, want an error naming the flag", err)
	}
}

func TestApply(t *testing.T) {
	reserved := ports(t, "53/udp", "53/tcp", "7946/tcp")
	base := Settings{Expose: ports(t, "22", "8080"), SOCKS5: "127.0.0.1:1080"}
	tests := []struct {
		name string
		c    Change
		want Settings
		err  error
		msg  string
	}{
		{"nothing", Change{}, base, nil, ""},
		{"add, sorted, duplicates dropped",
			Change{AddExpose: ports(t, "443", "5353/udp", "443", "22")},
			Settings{Expose: ports(t, "22", "443", "5353/udp", "8080"), SOCKS5: "127.0.0.1:1080"}, nil, ""},
		{"same port, other protocol",
			Change{AddExpose: ports(t, "8080/udp")},
			Settings{Expose: ports(t, "22", "8080", "8080/udp"), SOCKS5: "127.0.0.1:1080"}, nil, ""},
		{"remove", Change{RemoveExpose: ports(t, "22")},
			Settings{Expose: ports(t, "8080"), SOCKS5: "127.0.0.1:1080"}, nil, ""},
		{"remove with an empty protocol", Change{RemoveExpose: []tun.ExposedPort{{Port: 8080}}},
			Settings{Expose: ports(t, "22"), SOCKS5: "127.0.0.1:1080"}, nil, ""},
		{"remove what is not exposed", Change{RemoveExpose: ports(t, "22/udp")}, base, api.ErrNotFound, "22/udp is not exposed (exposed: 22/tcp, 8080/tcp)"},
		{"proxies set and off", Change{SOCKS5: ptr(""), HTTPProxy: ptr("127.0.0.1:3128")},
			Settings{Expose: ports(t, "22", "8080"), HTTPProxy: "127.0.0.1:3128"}, nil, ""},
		{"both proxies on one address", Change{HTTPProxy: ptr("127.0.0.1:1080")}, base, api.ErrBadRequest, "cannot both listen"},
		{"reserved port", Change{AddExpose: ports(t, "53/udp")}, base, api.ErrBadRequest, "agent's own"},
		{"protocol matters for reserved ports", Change{AddExpose: ports(t, "7946/udp")},
			Settings{Expose: ports(t, "22", "7946/udp", "8080"), SOCKS5: "127.0.0.1:1080"}, nil, ""},
		{"too many", Change{AddExpose: func() []tun.ExposedPort {
			var ps []tun.ExposedPort
			for i := range MaxExposed {
				ps = append(ps, tun.ExposedPort{Port: uint16(10000 + i), Proto: "tcp"})
			}
			return ps
		}()}, base, api.ErrBadRequest, "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := base.Apply(tt.c, reserved)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("error %v, want %v with %q", err, tt.err, tt.msg)
				}
				if !reflect.DeepEqual(got, base) {
					t.Fatalf("a refused change returned %+v, want the settings unchanged", got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Apply = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if len(base.Expose) != 2 || base.Expose[0].Port != 22 {
		t.Fatalf("Apply changed its receiver: %+v", base)
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	if s, err := Load(dir); err != nil || !reflect.DeepEqual(s, Settings{}) {
		t.Fatalf("no file: %+v, %v; want no settings", s, err)
	}
	want := Settings{Expose: ports(t, "22", "53/udp"), SOCKS5: "127.0.0.1:1080", HTTPProxy: "0.0.0.0:3128"}
	if err := want.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Load after Save = %+v, %v; want %+v", got, err, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if !strings.Contains(string(b), `"22/tcp"`) || !strings.Contains(string(b), `"http_proxy": "0.0.0.0:3128"`) {
		t.Fatalf("the file is not what a person would read and edit:\n%s", b)
	}
	st, _ := os.Stat(filepath.Join(dir, FileName))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the data dir holds %d entries after Save, want the file alone (no temp files)", len(entries))
	}
	// Turning everything off leaves a valid, empty file.
	if err := (Settings{}).Save(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(dir); err != nil || !reflect.DeepEqual(got, Settings{}) {
		t.Fatalf("after saving nothing: %+v, %v", got, err)
	}
}

func TestLoadRefuses(t *testing.T) {
	tests := []struct{ name, content, err string }{
		{"not json", "expose 8080", "parse"},
		{"truncated", `{"version":1,"expose":["80`, "parse"},
		{"unknown version", `{"version":2}`, "version 2"},
		{"no version", `{"expose":["80"]}`, "version 0"},
		{"unknown field", `{"version":1,"exposed":["80"]}`, "unknown field"},
		{"bad port", `{"version":1,"expose":["80/sctp"]}`, "neither tcp nor udp"},
		{"bad listen", `{"version":1,"socks5":"proxy:1080"}`, "socks5"},
		{"too large", `{"version":1,"expose":["` + strings.Repeat(" ", maxFileBytes) + `80"]}`, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), FileName) {
				t.Fatalf("Load: %v; want an error naming the file and %q", err, tt.err)
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	dir := t.TempDir()
	s, err := Update(dir, Change{AddExpose: ports(t, "8080"), SOCKS5: ptr("127.0.0.1:1080")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second command adds to what the first stored.
	s, err = Update(dir, Change{AddExpose: ports(t, "53/udp"), HTTPProxy: ptr("127.0.0.1:3128")}, nil)
	want := Settings{Expose: ports(t, "53/udp", "8080"), SOCKS5: "127.0.0.1:1080", HTTPProxy: "127.0.0.1:3128"}
	if err != nil || !reflect.DeepEqual(s, want) {
		t.Fatalf("Update = %+v, %v; want %+v", s, err, want)
	}
	if got, _ := Load(dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
	if _, err := Update(dir, Change{RemoveExpose: ports(t, "9")}, nil); err == nil {
		t.Fatal("removing a port that is not exposed passed")
	}
	if got, _ := Load(dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("a refused update changed the file: %+v", got)
	}
}

// TestUserspaceKept: netstack mode, once chosen, survives a save and a
// load, and a change without it; --kernel (false) forgets it.
func TestUserspaceKept(t *testing.T) {
	dir := t.TempDir()
	yes, no := true, false
	s, err := Update(dir, Change{Userspace: &yes}, nil)
	if err != nil || !s.Userspace {
		t.Fatalf("userspace on: %+v, %v", s, err)
	}
	if s, err = Update(dir, Change{SOCKS5: new("127.0.0.1:1080")}, nil); err != nil || !s.Userspace {
		t.Fatalf("another change lost userspace: %+v, %v", s, err)
	}
	if s, err = Load(dir); err != nil || !s.Userspace {
		t.Fatalf("loaded: %+v, %v", s, err)
	}
	if s, err = Update(dir, Change{Userspace: &no}, nil); err != nil || s.Userspace {
		t.Fatalf("userspace off: %+v, %v", s, err)
	}
	if s, err = Load(dir); err != nil || s.Userspace || s.SOCKS5 != "127.0.0.1:1080" {
		t.Fatalf("loaded after off: %+v, %v", s, err)
	}
}
