package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The peers are configured alike, as a user who tuned each for this job
// would: two workers (one per core; Caddy and the uncloud ingress are Go
// programs with GOMAXPROCS = 2), HTTP/1.1 keep-alive to the backend with a
// pool large enough for wrk's 64 connections, X-Forwarded-For/-Proto/-Host
// set as the uncloud ingress sets them, and no access log anywhere (the
// uncloud ingress writes none unless -access-log).

// caddyConfig: Caddy keeps backend connections alive by default and logs
// no requests unless told to.
func caddyConfig(p ports, certFile, keyFile string) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
}
http://localhost:%d {
	reverse_proxy 127.0.0.1:%d
}
https://localhost:%d {
	tls %s %s
	reverse_proxy 127.0.0.1:%d
}
`, p.caddyHTTP, p.backend, p.caddyHTTPS, certFile, keyFile, p.backend)
}

// nginxConfig: an upstream block with keepalive (nginx otherwise opens a
// connection per request and speaks HTTP/1.0 to the backend).
func nginxConfig(p ports, tmp, certFile, keyFile string) string {
	return fmt.Sprintf(`worker_processes 2;
daemon off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/nginx-body;
	proxy_temp_path %[1]s/nginx-proxy;
	fastcgi_temp_path %[1]s/nginx-fastcgi;
	uwsgi_temp_path %[1]s/nginx-uwsgi;
	scgi_temp_path %[1]s/nginx-scgi;
	keepalive_requests 1000000;
	upstream backend {
		server 127.0.0.1:%[2]d;
		keepalive 256;
		keepalive_requests 1000000;
	}
	server {
		listen 127.0.0.1:%[3]d;
		listen 127.0.0.1:%[4]d ssl;
		server_name localhost;
		ssl_certificate %[5]s;
		ssl_certificate_key %[6]s;
		ssl_session_cache shared:SSL:1m;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $http_host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto $scheme;
			proxy_set_header X-Forwarded-Host $http_host;
		}
	}
}
`, tmp, p.backend, p.nginxHTTP, p.nginxHTTPS, certFile, keyFile)
}

// haproxyConfig: HTTP mode keeps both sides alive by default; no "log"
// line, so no access log.
func haproxyConfig(p ports, pemFile string) string {
	return fmt.Sprintf(`global
	nbthread 2
	maxconn 4096
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	http-reuse always
frontend http
	bind 127.0.0.1:%d
	option forwardfor
	http-request set-header X-Forwarded-Proto http
	http-request set-header X-Forwarded-Host %%[req.hdr(host)]
	default_backend be
frontend https
	bind 127.0.0.1:%d ssl crt %s
	option forwardfor
	http-request set-header X-Forwarded-Proto https
	http-request set-header X-Forwarded-Host %%[req.hdr(host)]
	default_backend be
backend be
	server s1 127.0.0.1:%d
`, p.haproxyHTTP, p.haproxyHTTPS, pemFile, p.backend)
}

// peerCommands writes the peers' configurations into tmp and returns the
// commands that run them in the foreground.
func peerCommands(p ports, tmp, certFile, keyFile string) (map[string]*exec.Cmd, error) {
	cf := filepath.Join(tmp, "Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyConfig(p, certFile, keyFile)), 0o600); err != nil {
		return nil, err
	}
	caddy := exec.Command("caddy", "run", "--config", cf, "--adapter", "caddyfile")
	caddy.Env = append(os.Environ(), "XDG_DATA_HOME="+tmp, "XDG_CONFIG_HOME="+tmp, "HOME="+tmp)

	nf := filepath.Join(tmp, "nginx.conf")
	if err := os.WriteFile(nf, []byte(nginxConfig(p, tmp, certFile, keyFile)), 0o600); err != nil {
		return nil, err
	}
	nginx := exec.Command("nginx", "-c", nf, "-p", tmp, "-e", "stderr")

	// haproxy wants the certificate and its key in one file.
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	pem := filepath.Join(tmp, "haproxy.pem")
	if err := os.WriteFile(pem, append(cert, key...), 0o600); err != nil {
		return nil, err
	}
	hf := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(hf, []byte(haproxyConfig(p, pem)), 0o600); err != nil {
		return nil, err
	}
	haproxy := exec.Command("haproxy", "-db", "-f", hf)
	return map[string]*exec.Cmd{"caddy": caddy, "nginx": nginx, "haproxy": haproxy}, nil
}

// versions of the peers, for the report.
func peerVersions() string {
	var v []string
	if out, err := exec.Command("caddy", "version").Output(); err == nil {
		v = append(v, "caddy "+strings.Fields(string(out))[0])
	}
	if out, err := exec.Command("nginx", "-v").CombinedOutput(); err == nil {
		v = append(v, strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
	}
	if out, err := exec.Command("haproxy", "-v").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 3 {
			v = append(v, "haproxy "+f[2])
		}
	}
	return strings.Join(v, ", ")
}
