package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/ui"
	"github.com/uncloud-mesh/uncloud/api"
)

type uiCmd struct {
	Listen string `default:"127.0.0.1:0" placeholder:"ADDR" help:"Loopback address to listen on (default: a random port on 127.0.0.1)."`
}

func (uiCmd) Help() string {
	return `Opens the web dashboard of the agent this command reaches (the local socket, --connect ssh://… or a context): the machines and whether this one sees them, the mesh as a picture, services and their containers with scale, restart, roll back and remove, live logs, and a Compose deploy with its plan.

It listens on this machine's loopback only and carries every request over the CLI's own connection, so nothing new is exposed on any machine. It prints a link with a one-time secret: the first browser that opens it gets the session (an HttpOnly, SameSite=Strict cookie); the link then stops working, so another local user who finds the port gets nothing. Runs until Ctrl-C.

A deploy from the page reads the pasted Compose file here, as 'uncloud deploy' would (variables from this environment, credentials of 'docker login'), and sends it to the agent.

Examples:
  uncloud ui
  uncloud --connect ssh://root@203.0.113.10 ui
  uncloud --context prod ui --listen 127.0.0.1:8765`
}

func (c uiCmd) Run(g *globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ap, err := netip.ParseAddrPort(c.Listen)
	if err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("--listen %q: give a loopback address and port such as 127.0.0.1:8765 (the dashboard is never served on other addresses)", c.Listen)
	}
	client, err := g.client()
	if err != nil {
		return err
	}
	defer client.Close()
	st, err := client.Status(ctx)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	gate, secret, err := ui.NewGate(uiRoutes(client), addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gate, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Printf("Dashboard of %s (%s) at:\n  http://%s%s?secret=%s\nThe link works once. Ctrl-C stops the dashboard.\n", st.Name, client.Target, addr, ui.LoginPath, secret)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve the dashboard: %w", err)
	}
	return nil
}

// uiRoutes carries the dashboard's requests to the agent over client's
// connection, except a deploy: that reads the pasted Compose file here,
// where the user's environment and Docker credentials are, as 'uncloud
// deploy' does.
func uiRoutes(client *api.Client) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "uncloud" // the dialer ignores it
			// The agent checks Origin against Host, as the gate does.
			pr.Out.Host = pr.In.Host
		},
		Transport:     client.HTTP.Transport,
		FlushInterval: -1, // server-sent events
	}
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, proxy)
	mux.HandleFunc("POST "+ui.Prefix+"deploy/{op}", func(w http.ResponseWriter, r *http.Request) {
		op := r.PathValue("op")
		if op != "plan" && op != "apply" {
			http.NotFound(w, r)
			return
		}
		uiDeploy(w, r, client, op == "plan")
	})
	return mux
}

// maxComposeBytes bounds a pasted Compose file.
const maxComposeBytes = 256 << 10

// uiDeploy loads the pasted Compose file as a project, then plans or
// applies it, writing the plan and the progress as lines of text while
// they come.
func uiDeploy(w http.ResponseWriter, r *http.Request, client *api.Client, dryRun bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxComposeBytes+4096)
	text, project := r.PostFormValue("compose"), r.PostFormValue("project")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	fl, _ := w.(http.Flusher)
	say := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		if fl != nil {
			fl.Flush()
		}
	}
	if strings.TrimSpace(text) == "" || project == "" {
		w.WriteHeader(http.StatusBadRequest)
		say("error: give a project name and a Compose file")
		return
	}
	res, err := loadPastedCompose(r.Context(), text, project)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		say("error: %v", err)
		return
	}
	for _, n := range append(res.Notices, res.Warnings...) {
		say("warning: %s", n)
	}
	var images []string
	for _, s := range res.Services {
		images = append(images, s.Image)
	}
	auths, err := dockerCredentials{}.forImages(images)
	if err != nil {
		say("error: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Hour)
	defer cancel()
	say("Project %s", res.Project)
	say("Plan:")
	inPlan := true
	req := api.DeployRequest{Services: res.Services, DryRun: dryRun, RegistryAuths: auths, By: cliUser() + " (dashboard)"}
	err = client.Deploy(ctx, req, func(e api.DeployEvent) error {
		if e.Image != nil {
			if e.Image.Status == "done" || e.Image.Status == "failed" || e.Image.Status == "pulling" {
				say("  pull %s on %s: %s %s", e.Image.Image, e.Image.Machine, e.Image.Status, e.Image.Error)
			}
			return nil
		}
		if inPlan && !e.Plan {
			inPlan = false
			say("Applying:")
		}
		say("  %s", stepLine(e))
		return nil
	})
	if err != nil {
		say("error: %v", err)
		return
	}
	if dryRun {
		say("(plan only: nothing changed)")
	} else {
		say("Deployed.")
	}
}

// loadPastedCompose reads text as the project's only Compose file, in a
// directory of its own (so no .env or override file of the user's is
// picked up by accident), with this process's environment.
func loadPastedCompose(ctx context.Context, text, project string) (composeResult, error) {
	dir, err := os.MkdirTemp("", "uncloud-ui-deploy-")
	if err != nil {
		return composeResult{}, fmt.Errorf("make a directory for the pasted Compose file: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return composeResult{}, fmt.Errorf("write the pasted Compose file: %w", err)
	}
	return loadCompose(ctx, composeOptions{Files: []string{path}, Project: project, Env: os.Environ()})
}
