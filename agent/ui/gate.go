package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
)

// LoginPath is where the one-time login link points.
const LoginPath = Prefix + "login"

// sessionCookie names the dashboard's session cookie.
const sessionCookie = "uncloud_session"

// Gate guards the dashboard on the user's loopback: a one-time secret,
// printed by `uncloud ui`, buys one browser session (an HttpOnly,
// SameSite=Strict cookie); every other request needs that session, and a
// state-changing one must come from the dashboard's own origin. Another
// local user can reach the port but holds neither the secret nor the
// cookie; another web site can make the browser send requests but never
// same-origin ones, and the cookie is not sent with its requests at all.
type Gate struct {
	next  http.Handler
	hosts []string // Host headers accepted: the listener's address by IP and as localhost
	cop   *http.CrossOriginProtection

	mu      sync.Mutex
	secret  []byte // nil once used
	session []byte // nil until the login
}

// NewGate wraps next for a listener at addr and returns the gate with its
// login secret (hex, 128 bits of entropy).
func NewGate(next http.Handler, addr string) (*Gate, string, error) {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, "", fmt.Errorf("make the login secret: %w", err)
	}
	secret := hex.EncodeToString(raw)
	g := &Gate{next: next, cop: http.NewCrossOriginProtection(), secret: []byte(secret)}
	g.hosts = []string{addr}
	if _, port, err := net.SplitHostPort(addr); err == nil {
		g.hosts = append(g.hosts, net.JoinHostPort("localhost", port))
	}
	return g, secret, nil
}

// ServeHTTP implements http.Handler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	// A page of another site whose name resolves to 127.0.0.1 (DNS
	// rebinding) has no session cookie either, but it gets no answer at all.
	if !g.hostAllowed(r.Host) {
		http.Error(w, "this dashboard answers only on the address uncloud ui printed", http.StatusMisdirectedRequest)
		return
	}
	if r.URL.Path == LoginPath {
		g.login(w, r)
		return
	}
	if !g.hasSession(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, "Not logged in: open the link that 'uncloud ui' printed (it works once), or run 'uncloud ui' again.")
		return
	}
	if err := g.cop.Check(r); err != nil {
		http.Error(w, "refused: a state-changing request from another site ("+err.Error()+")", http.StatusForbidden)
		return
	}
	if r.URL.Path == "/" {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	g.next.ServeHTTP(w, r)
}

func (g *Gate) hostAllowed(host string) bool {
	for _, h := range g.hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// login spends the secret: the first request that shows it gets the
// session, any later one (or a wrong secret) is refused.
func (g *Gate) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "the login link is opened with GET", http.StatusMethodNotAllowed)
		return
	}
	got := []byte(r.URL.Query().Get("secret"))
	g.mu.Lock()
	ok := g.secret != nil && subtle.ConstantTimeCompare(got, g.secret) == 1
	var session []byte
	if ok {
		g.secret = nil
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			g.mu.Unlock()
			http.Error(w, "make a session: "+err.Error(), http.StatusInternalServerError)
			return
		}
		session = []byte(hex.EncodeToString(raw))
		g.session = session
	}
	g.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintln(w, "Refused: this login link is wrong or was used already. Run 'uncloud ui' again for a new one.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: string(session), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (g *Gate) hasSession(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.session != nil && subtle.ConstantTimeCompare([]byte(c.Value), g.session) == 1
}
