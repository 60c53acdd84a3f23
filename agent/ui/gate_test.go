package ui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newTestGate(t *testing.T) (*Gate, string, *int) {
	t.Helper()
	hits := new(int)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { *hits++; w.Write([]byte("dashboard")) })
	g, secret, err := NewGate(next, "127.0.0.1:8765")
	if err != nil {
		t.Fatal(err)
	}
	return g, secret, hits
}

func do(g *Gate, method, target string, hdr map[string]string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://127.0.0.1:8765"+target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	return w
}

func login(t *testing.T, g *Gate, secret string) *http.Cookie {
	t.Helper()
	w := do(g, "GET", LoginPath+"?secret="+secret, nil)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("login with the secret: %d %s", w.Code, w.Body)
	}
	cs := w.Result().Cookies()
	if len(cs) != 1 || cs[0].Name != sessionCookie {
		t.Fatalf("login set cookies %v", cs)
	}
	c := cs[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
	}
	if len(c.Value) < 64 {
		t.Errorf("session %q is short", c.Value)
	}
	return c
}

func TestGateSecret(t *testing.T) {
	g, secret, _ := newTestGate(t)
	if len(secret) < 32 {
		t.Fatalf("secret %q has under 128 bits", secret)
	}
	for _, tt := range []struct{ name, query string }{
		{"none", ""},
		{"wrong", "?secret=" + strings.Repeat("0", len(secret))},
		{"prefix", "?secret=" + secret[:len(secret)-1]},
		{"longer", "?secret=" + secret + "0"},
	} {
		if w := do(g, "GET", LoginPath+tt.query, nil); w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
			t.Errorf("%s secret: %d, cookies %v; want 403 and none", tt.name, w.Code, w.Result().Cookies())
		}
	}
	c := login(t, g, secret)
	if w := do(g, "GET", LoginPath+"?secret="+secret, nil); w.Code != http.StatusForbidden {
		t.Errorf("the secret used again: %d, want 403", w.Code)
	}
	if w := do(g, "POST", LoginPath+"?secret="+secret, nil); w.Code == http.StatusSeeOther {
		t.Errorf("a POST login was accepted")
	}
	if w := do(g, "GET", Prefix, nil, c); w.Code != http.StatusOK || w.Body.String() != "dashboard" {
		t.Errorf("with the session: %d %q", w.Code, w.Body)
	}
}

func TestGateSessionAndOrigin(t *testing.T) {
	g, secret, hits := newTestGate(t)
	if w := do(g, "GET", Prefix, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("before login: %d, want 401", w.Code)
	}
	c := login(t, g, secret)
	forged := &http.Cookie{Name: sessionCookie, Value: strings.Repeat("a", 64)}
	same := map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8765"}
	tests := []struct {
		name    string
		method  string
		host    string
		hdr     map[string]string
		cookie  *http.Cookie
		want    int
		reaches bool
	}{
		{"page with the session", "GET", "", nil, c, 200, true},
		{"forged session", "GET", "", nil, forged, 401, false},
		{"same-origin POST", "POST", "", same, c, 200, true},
		{"cross-site POST", "POST", "", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, c, 403, false},
		{"same-site POST", "POST", "", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:8765"}, c, 403, false},
		{"POST from another origin, no Sec-Fetch-Site", "POST", "", map[string]string{"Origin": "https://evil.example"}, c, 403, false},
		{"same-origin POST without the session", "POST", "", same, nil, 401, false},
		{"rebound host name", "GET", "evil.example:8765", nil, c, 421, false},
		{"localhost", "GET", "localhost:8765", nil, c, 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := *hits
			r := httptest.NewRequest(tt.method, "http://127.0.0.1:8765"+Prefix+"services/web/remove", nil)
			if tt.host != "" {
				r.Host = tt.host
			}
			for k, v := range tt.hdr {
				r.Header.Set(k, v)
			}
			if tt.cookie != nil {
				r.AddCookie(tt.cookie)
			}
			w := httptest.NewRecorder()
			g.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("status %d, want %d (%s)", w.Code, tt.want, w.Body)
			}
			if got := *hits > before; got != tt.reaches {
				t.Errorf("reached the dashboard: %v, want %v", got, tt.reaches)
			}
		})
	}
}
