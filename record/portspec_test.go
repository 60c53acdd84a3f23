package record

import (
	"strings"
	"testing"
)

func TestParsePortSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    PortSpec
		wantErr string
	}{
		{in: "8080", want: PortSpec{Port: 8080, Protocol: "tcp"}},
		{in: "53/udp", want: PortSpec{Port: 53, Protocol: "udp"}},
		{in: "53/UDP", want: PortSpec{Port: 53, Protocol: "udp"}},
		{in: "app.example.com:8080/https", want: PortSpec{Host: "app.example.com", Port: 8080, Protocol: "https"}},
		{in: "App.Example.com:80/http", want: PortSpec{Host: "app.example.com", Port: 80, Protocol: "http"}},
		{in: "example.com/api:9000/http", want: PortSpec{Host: "example.com", PathPrefix: "/api", Port: 9000, Protocol: "http"}},
		{in: "example.com/api/:9000/http", want: PortSpec{Host: "example.com", PathPrefix: "/api", Port: 9000, Protocol: "http"}},
		{in: "*.example.com:80/https", want: PortSpec{Host: "*.example.com", Port: 80, Protocol: "https"}},
		{in: "8000-8002", want: PortSpec{Port: 8000, PortEnd: 8002, Protocol: "tcp"}},
		// Docker's forms publish host ports.
		{in: "8080:80", want: PortSpec{Publish: true, HostPort: 8080, Port: 80, Protocol: "tcp"}},
		{in: "8080:80/udp", want: PortSpec{Publish: true, HostPort: 8080, Port: 80, Protocol: "udp"}},
		{in: "127.0.0.1:8080:80/udp", want: PortSpec{Publish: true, HostIP: "127.0.0.1", HostPort: 8080, Port: 80, Protocol: "udp"}},
		{in: "0.0.0.0:8080:80", want: PortSpec{Publish: true, HostPort: 8080, Port: 80, Protocol: "tcp"}},
		{in: "[::1]:8080:80", want: PortSpec{Publish: true, HostIP: "::1", HostPort: 8080, Port: 80, Protocol: "tcp"}},
		{in: "[::]:8080:80", want: PortSpec{Publish: true, HostPort: 8080, Port: 80, Protocol: "tcp"}},
		{in: "8000-8001:80-81", want: PortSpec{Publish: true, HostPort: 8000, Port: 80, PortEnd: 81, Protocol: "tcp"}},
		{in: "10.0.0.1:8000-8001:80-81/udp", want: PortSpec{Publish: true, HostIP: "10.0.0.1", HostPort: 8000, Port: 80, PortEnd: 81, Protocol: "udp"}},
		{in: "127.0.0.1::80", want: PortSpec{Publish: true, HostIP: "127.0.0.1", Port: 80, Protocol: "tcp"}},
		{in: " 9000:9000 ", want: PortSpec{Publish: true, HostPort: 9000, Port: 9000, Protocol: "tcp"}},
		{in: "8000-8001:80", wantErr: "ranges of one length"},
		{in: "8000:80-81", wantErr: "ranges of one length"},
		{in: "8000-8002:80-81", wantErr: "ranges of one length"},
		{in: "8001-8000", wantErr: "must go up"},
		{in: "1-2000", wantErr: "more than 1024"},
		{in: "8080:80/https", wantErr: "published host port is tcp or udp"},
		{in: "8080:0", wantErr: "not a port number"},
		{in: "70000:80", wantErr: "host port"},
		{in: ":80", wantErr: "no host port"},
		{in: "127.0.0.1:80", wantErr: "an address alone"},
		{in: "localhost:8080:80", wantErr: "not an IP address"},
		{in: "::1:8080:80", wantErr: "too many"},
		{in: "[::1]:8080", wantErr: "IPv6"},
		{in: "[fe80::1%eth0]:80:80", wantErr: "not an IP address"},
		{in: "1:2:3:4", wantErr: "too many"},
		{in: "8080:80/sctp", wantErr: "unknown protocol"},
		{in: "a-b:80", wantErr: "add /http or /https"}, // a host name
		{in: "/udp", wantErr: "not a port number"},
		{in: "", wantErr: "empty"},
		{in: "0", wantErr: "not a port number"},
		{in: "65536", wantErr: "not a port number"},
		{in: "http", wantErr: "not a port number"},
		{in: "80/sctp", wantErr: "unknown protocol"},
		{in: "app.example.com:80", wantErr: "add /http or /https"},
		{in: "app.example.com:80/udp", wantErr: "add /http or /https"},
		{in: "80/https", wantErr: "needs a host name"},
		{in: "bad_host:80/http", wantErr: "not allowed"},
		{in: "-bad.com:80/http", wantErr: "not a DNS label"},
		{in: "a..b:80/http", wantErr: "not a DNS label"},
		{in: "a.com/x?y:80/http", wantErr: "plain path"},
	}
	for _, tt := range tests {
		got, err := ParsePortSpec(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePortSpec(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePortSpec(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParsePortSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		again, err := ParsePortSpec(got.String())
		if err != nil || again != got {
			t.Errorf("round trip of %q through %q: %+v, %v", tt.in, got.String(), again, err)
		}
	}
}

func FuzzParsePortSpec(f *testing.F) {
	for _, s := range []string{"8080", "53/udp", "a.b:80/https", "x.com/api:1/http", "1.2.3.4:80-81:90-91/udp", "[::1]::80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePortSpec(s)
		if err != nil {
			return
		}
		again, err := ParsePortSpec(p.String())
		if err != nil || again != p {
			t.Fatalf("%q parsed to %+v, whose text %q parses to %+v, %v", s, p, p.String(), again, err)
		}
	})
}

func TestPortSpecBindings(t *testing.T) {
	p, err := ParsePortSpec("127.0.0.1:8000-8001:80-81/udp")
	if err != nil {
		t.Fatal(err)
	}
	b := p.Bindings()
	want := []Binding{{"127.0.0.1", 8000, 80, "udp"}, {"127.0.0.1", 8001, 81, "udp"}}
	if len(b) != 2 || b[0] != want[0] || b[1] != want[1] {
		t.Fatalf("Bindings = %+v, want %+v", b, want)
	}
	if got := b[1].String(); got != "127.0.0.1:8001/udp" {
		t.Errorf("String = %q", got)
	}
	for _, s := range []string{"8080", "app.example.com:80/https"} {
		if p, _ := ParsePortSpec(s); p.Bindings() != nil {
			t.Errorf("%s publishes %v", s, p.Bindings())
		}
	}
	all := Binding{HostPort: 8080, Protocol: "tcp"}
	for _, tc := range []struct {
		a, b Binding
		want bool
	}{
		{all, all, true},
		{all, Binding{HostIP: "127.0.0.1", HostPort: 8080, Protocol: "tcp"}, true},
		{Binding{HostIP: "10.0.0.1", HostPort: 8080, Protocol: "tcp"}, Binding{HostIP: "127.0.0.1", HostPort: 8080, Protocol: "tcp"}, false},
		{all, Binding{HostPort: 8080, Protocol: "udp"}, false},
		{all, Binding{HostPort: 8081, Protocol: "tcp"}, false},
		{Binding{Protocol: "tcp"}, Binding{Protocol: "tcp"}, false}, // Docker picks both
	} {
		if got := tc.a.Collides(tc.b); got != tc.want || tc.b.Collides(tc.a) != tc.want {
			t.Errorf("%v collides %v = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
