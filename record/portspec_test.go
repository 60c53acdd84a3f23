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
	for _, s := range []string{"8080", "53/udp", "a.b:80/https", "x.com/api:1/http"} {
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
