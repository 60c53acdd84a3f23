package ingress

import (
	"html"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const acmeChallengePrefix = "/.well-known/acme-challenge/"

// serveHTTP answers the plain HTTP listener: ACME challenges, redirects
// of https routes, and http routes.
func (in *Ingress) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, acmeChallengePrefix) && in.certs.serveChallenge(w, r) {
		return
	}
	rt := in.table.Load().lookup(r.Host, r.URL.Path)
	if rt == nil {
		in.logged(w, r, nil, http.HandlerFunc(notFound))
		return
	}
	if rt.HTTPS {
		in.logged(w, r, rt, http.HandlerFunc(in.redirect))
		return
	}
	in.logged(w, r, rt, rt.handler)
}

// serveHTTPS answers the TLS listener (HTTP/1.1 and HTTP/2).
func (in *Ingress) serveHTTPS(w http.ResponseWriter, r *http.Request) {
	rt := in.table.Load().lookup(r.Host, r.URL.Path)
	if rt == nil {
		in.logged(w, r, nil, http.HandlerFunc(notFound))
		return
	}
	in.logged(w, r, rt, rt.handler)
}

// ServeHTTP bounds the request body and proxies.
func (h *routeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > h.maxBody {
		plainError(w, http.StatusRequestEntityTooLarge, "413 request body too large: at most "+
			strconv.FormatInt(h.maxBody, 10)+" bytes\n")
		return
	}
	if r.ContentLength < 0 {
		r.Body = http.MaxBytesReader(w, r.Body, h.maxBody)
	}
	h.rp.ServeHTTP(w, r)
}

func (in *Ingress) redirect(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(hostOnly(r.Host))
	target := "https://" + host + portSuffix(in.httpsPort(), 443) + r.URL.RequestURI()
	http.Redirect(w, r, target, http.StatusPermanentRedirect)
}

// notFound is the clear small page for a host no service publishes.
func notFound(w http.ResponseWriter, r *http.Request) {
	host := hostOnly(r.Host)
	if len(host) > 253 {
		host = host[:253] + "…"
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, `<!doctype html>
<html><head><meta charset="utf-8"><title>404 no such site</title></head>
<body><h1>404: no such site</h1>
<p>No service is published at <code>`+html.EscapeString(host)+`</code> on this ingress.
Publish one with <code>-p `+html.EscapeString(host)+`:PORT/https</code>.</p>
</body></html>
`)
}

// logged runs h and, with an access log or metrics configured, writes
// one record and counts the request.
func (in *Ingress) logged(w http.ResponseWriter, r *http.Request, rt *Route, h http.Handler) {
	if in.cfg.AccessLog == nil && in.cfg.Metrics == nil {
		h.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	h.ServeHTTP(sw, r)
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	if in.cfg.Metrics != nil {
		in.cfg.Metrics.observe(rt, sw.status, time.Since(start))
	}
	if in.cfg.AccessLog == nil {
		return
	}
	service := ""
	if rt != nil {
		service = rt.Service
	}
	in.cfg.AccessLog.Info("request", "remote", r.RemoteAddr, "proto", r.Proto, "method", r.Method,
		"host", r.Host, "uri", r.RequestURI, "status", sw.status, "bytes", sw.bytes,
		"service", service, "duration", time.Since(start), "tls", r.TLS != nil)
}

// statusWriter records status and size; Unwrap keeps Flush and Hijack
// (websockets) working through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 || code == http.StatusSwitchingProtocols {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) Flush() { http.NewResponseController(s.ResponseWriter).Flush() }
