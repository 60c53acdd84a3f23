package runtime

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
)

func TestParseVolume(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    mount.Mount
		wantErr string
	}{
		{"data:/var/lib/data", mount.Mount{Type: mount.TypeVolume, Source: "data", Target: "/var/lib/data"}, ""},
		{"data:/d:ro", mount.Mount{Type: mount.TypeVolume, Source: "data", Target: "/d", ReadOnly: true}, ""},
		{"/srv/x:/x:rw", mount.Mount{Type: mount.TypeBind, Source: "/srv/x", Target: "/x"}, ""},
		{"data", mount.Mount{}, "not VOLUME:/path"},
		{"data:relative", mount.Mount{}, "absolute container path"},
		{":/x", mount.Mount{}, "needs a source"},
		{"data:/x:rx", mount.Mount{}, `mode "rx"`},
		{"bad name!:/x", mount.Mount{}, "not a volume name"},
		{"a:b:c:d", mount.Mount{}, "not VOLUME:/path"},
	} {
		got, err := ParseVolume(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrBadSpec) {
				t.Errorf("ParseVolume(%q) = %v, want error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestDockerVolumes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []string
		binds  []string
		mounts []mount.Mount
	}{
		{"none", nil, nil, nil},
		{"bind: Docker's -v form, which makes a missing host path",
			[]string{"/srv/x:/x", "/etc/localtime:/etc/localtime:ro", "/srv/y:/y:rw"},
			[]string{"/srv/x:/x", "/etc/localtime:/etc/localtime:ro", "/srv/y:/y"}, nil},
		{"named volumes and tmpfs stay mounts",
			[]string{"data:/data:ro", "tmpfs:/cache", "/srv/x:/x"},
			[]string{"/srv/x:/x"},
			[]mount.Mount{{Type: mount.TypeVolume, Source: "data", Target: "/data", ReadOnly: true}, {Type: mount.TypeTmpfs, Target: "/cache"}}},
	} {
		binds, mounts := ContainerSpec{Volumes: tc.in}.dockerVolumes()
		if !slices.Equal(binds, tc.binds) || !slices.Equal(mounts, tc.mounts) {
			t.Errorf("%s: dockerVolumes(%q) = %q, %+v; want %q, %+v", tc.name, tc.in, binds, mounts, tc.binds, tc.mounts)
		}
	}
}

func TestParseRestart(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    container.RestartPolicy
		wantErr bool
	}{
		{"", container.RestartPolicy{Name: "unless-stopped"}, false},
		{"no", container.RestartPolicy{Name: "no"}, false},
		{"always", container.RestartPolicy{Name: "always"}, false},
		{"on-failure", container.RestartPolicy{Name: "on-failure"}, false},
		{"on-failure:5", container.RestartPolicy{Name: "on-failure", MaximumRetryCount: 5}, false},
		{"on-failure:x", container.RestartPolicy{}, true},
		{"always:3", container.RestartPolicy{}, true},
		{"sometimes", container.RestartPolicy{}, true},
	} {
		got, err := ParseRestart(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseRestart(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	ok := ContainerSpec{Service: "web", Image: "nginx:1", Env: []string{"A=1", "B="},
		Volumes: []string{"d:/d"}, Ports: []string{"8080", "app.example.com:80/https", "53/udp"}, Restart: "always"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for _, tc := range []struct {
		name    string
		change  func(*ContainerSpec)
		wantErr string
	}{
		{"service upper", func(s *ContainerSpec) { s.Service = "Web" }, `service name "Web"`},
		{"service dash", func(s *ContainerSpec) { s.Service = "web-" }, `service name "web-"`},
		{"container name", func(s *ContainerSpec) { s.Name = "_ab" }, `container name "_ab"`},
		{"no image", func(s *ContainerSpec) { s.Image = "" }, "image"},
		{"env", func(s *ContainerSpec) { s.Env = []string{"NOEQUALS"} }, `environment "NOEQUALS"`},
		{"port", func(s *ContainerSpec) { s.Ports = []string{"80/sctp"} }, `unknown protocol "sctp"`},
		{"port host without ingress", func(s *ContainerSpec) { s.Ports = []string{"a.com:80"} }, "add /http or /https"},
		{"port zero", func(s *ContainerSpec) { s.Ports = []string{"0"} }, "not a port number"},
		{"restart", func(s *ContainerSpec) { s.Restart = "maybe" }, `restart "maybe"`},
		{"volume", func(s *ContainerSpec) { s.Volumes = []string{"x"} }, `volume "x"`},
	} {
		s := ok
		tc.change(&s)
		err := s.Validate()
		if err == nil || !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Validate = %v, want ErrBadSpec with %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestPortList(t *testing.T) {
	s := ContainerSpec{Ports: []string{"8080", "53/udp", "App.Example.com:8443/https", "example.com/api:9000/http"}}
	got, err := s.PortList()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"8080/tcp/", "53/udp/", "8443/tcp/app.example.com", "9000/tcp/example.com"}
	if len(got) != len(want) {
		t.Fatalf("got %d ports, want %d", len(got), len(want))
	}
	for i, p := range got {
		if s := strings.Join([]string{itoa(p.Port), p.Protocol, p.Name}, "/"); s != want[i] {
			t.Errorf("port %d = %s, want %s", i, s, want[i])
		}
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestSpecPorts(t *testing.T) {
	s := ContainerSpec{Service: "web", Image: "x", Ports: []string{"8080", "9000-9001:90-91/udp", "app.example.com:8080/https", "127.0.0.1::53/udp"}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	ports, _ := s.PortList()
	var got []string
	for _, p := range ports {
		got = append(got, strconv.Itoa(int(p.Port))+"/"+p.Protocol+" "+p.Name)
	}
	want := "8080/tcp |90/udp |91/udp |8080/tcp app.example.com|53/udp "
	if strings.Join(got, "|") != want {
		t.Errorf("PortList = %q, want %q", strings.Join(got, "|"), want)
	}
	exposed, bindings := s.dockerPorts()
	if len(exposed) != 4 {
		t.Errorf("exposed = %v", exposed)
	}
	if b := bindings["91/udp"]; len(b) != 1 || b[0].HostPort != "9001" || b[0].HostIP != "" {
		t.Errorf("91/udp bound to %+v", b)
	}
	if b := bindings["53/udp"]; len(b) != 1 || b[0].HostPort != "" || b[0].HostIP != "127.0.0.1" {
		t.Errorf("53/udp bound to %+v", b)
	}
	if _, ok := bindings["8080/tcp"]; ok {
		t.Error("an SRV or ingress port was published on the host")
	}
	twice := ContainerSpec{Service: "web", Image: "x", Ports: []string{"8080:80", "127.0.0.1:8080:81"}}
	if err := twice.Validate(); err == nil || !strings.Contains(err.Error(), "8080/tcp is published twice") {
		t.Errorf("a spec binding 8080 twice: %v", err)
	}
}
