package ui

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// Prefix is where the dashboard lives on the local API.
const Prefix = "/ui/"

// MachinePathView is the machine API path of a machine's View.
const MachinePathView = "/v1/ui/view"

//go:embed assets
var assets embed.FS

// Server serves the dashboard's pages, events and actions.
type Server struct {
	src   Source
	log   *slog.Logger
	tmpl  *template.Template
	views viewCache
	mux   *http.ServeMux
	cop   *http.CrossOriginProtection
	// tick is how often an open page re-reads what the state's watch does
	// not carry (gossip liveness, paths, load); only changes are sent.
	tick time.Duration
}

// NewServer is the dashboard over src.
func NewServer(src Source, log *slog.Logger) (*Server, error) {
	t, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/*.tmpl")
	if err != nil {
		return nil, fmt.Errorf("parse the dashboard's templates: %w", err)
	}
	s := &Server{src: src, log: log, tmpl: t, mux: http.NewServeMux(), cop: http.NewCrossOriginProtection(), tick: time.Second}
	static, _ := fs.Sub(assets, "assets")
	s.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", staticFiles(static)))
	for _, p := range pages {
		s.mux.HandleFunc("GET "+Prefix+p.path, s.page(p))
	}
	s.mux.HandleFunc("GET "+Prefix+"events", s.events)
	s.mux.HandleFunc("GET "+Prefix+"logs/stream", s.logStream)
	s.mux.HandleFunc("POST "+Prefix+"services/{name}/{action}", s.action)
	return s, nil
}

// ServeHTTP implements http.Handler. The agent checks the origin of
// state-changing requests too, so the dashboard is safe behind any
// front that forwards the browser's headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.cop.Check(r); err != nil {
		http.Error(w, "refused: a state-changing request from another site ("+err.Error()+")", http.StatusForbidden)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	s.mux.ServeHTTP(w, r)
}

func staticFiles(root fs.FS) http.Handler {
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".css") && !strings.HasSuffix(r.URL.Path, ".js") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// pageDef is one page: its path under Prefix, its nav title, and whether
// it asks other machines for their views.
type pageDef struct {
	name, path, title string
	views             bool
}

var pages = []pageDef{
	{"overview", "{$}", "Overview", true},
	{"mesh", "mesh", "Mesh", true},
	{"services", "services", "Services", false},
	{"logs", "logs", "Logs", false},
	{"deploy", "deploy", "Deploy", false},
}

func pageByName(name string) (pageDef, bool) {
	for _, p := range pages {
		if p.name == name {
			return p, true
		}
	}
	return pageDef{}, false
}

// frame is what the layout draws around a page's live part.
type frame struct {
	Page  string
	Title string
	Nav   []navItem
	Self  string
	Query string // the page's own query, carried to its event stream
	Msg   string
	Live  template.HTML
}

// navItem is one link of the page's navigation.
type navItem struct{ Name, Href, Title string }

func nav() []navItem {
	out := make([]navItem, 0, len(pages))
	for _, p := range pages {
		href := Prefix + p.path
		if p.path == "{$}" {
			href = Prefix
		}
		out = append(out, navItem{Name: p.name, Href: href, Title: p.title})
	}
	return out
}

// liveData is what a page's live part is drawn from.
type liveData struct {
	snapshot
	Edges   []edge
	SVG     template.HTML
	Service string // the logs page's service
}

func (s *Server) page(p pageDef) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		live, self, err := s.render(r.Context(), p, r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		q := url.Values{"page": {p.name}}
		if svc := r.URL.Query().Get("service"); svc != "" {
			q.Set("service", svc)
		}
		f := frame{Page: p.name, Title: p.title, Nav: nav(), Self: self, Query: q.Encode(), Msg: r.URL.Query().Get("msg"), Live: live}
		var buf bytes.Buffer
		if err := s.tmpl.ExecuteTemplate(&buf, "layout.tmpl", f); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(buf.Bytes())
	}
}

// render draws a page's live part: the part the event stream replaces.
func (s *Server) render(ctx context.Context, p pageDef, q url.Values) (template.HTML, string, error) {
	d := liveData{snapshot: s.read(ctx, p.views), Service: q.Get("service")}
	if p.name == "mesh" {
		d.Edges = meshEdges(d.snapshot)
		d.SVG = meshSVG(d.snapshot, d.Edges)
	}
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, p.name+".tmpl", d); err != nil {
		return "", "", fmt.Errorf("draw the %s page: %w", p.name, err)
	}
	return template.HTML(buf.String()), d.Self, nil
}

// heartbeat is how often an idle event stream says it is alive; the page
// marks itself stale when it hears nothing for three of them.
const heartbeat = 3 * time.Second

// events pushes a page's live part whenever it changes: on every change
// of the state's watch or of reachability, and re-read every tick for
// what those do not carry (gossip's suspicion, paths, load).
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	p, ok := pageByName(r.URL.Query().Get("page"))
	if !ok {
		http.Error(w, "no such page", http.StatusNotFound)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	changed := s.src.Changed(ctx)
	tick := time.NewTicker(s.tick)
	defer tick.Stop()
	beat := time.NewTimer(0)
	defer beat.Stop()
	var last template.HTML
	first := true
	for {
		live, _, err := s.render(ctx, p, r.URL.Query())
		if err != nil && ctx.Err() != nil {
			return
		}
		if err != nil {
			live = template.HTML(`<p class="error">` + template.HTMLEscapeString(err.Error()) + `</p>`)
		}
		if live != last || first {
			last, first = live, false
			if writeEvent(w, "live", string(live)) != nil {
				return
			}
			fl.Flush()
			beat.Reset(heartbeat)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		case <-beat.C:
			if writeEvent(w, "beat", strconv.FormatInt(time.Now().Unix(), 10)) != nil {
				return
			}
			fl.Flush()
			beat.Reset(heartbeat)
		}
	}
}

func writeEvent(w http.ResponseWriter, event, data string) error {
	var b strings.Builder
	b.WriteString("event: " + event + "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	_, err := w.Write([]byte(b.String()))
	return err
}

// logStream follows a service's logs, merged across its machines, as
// events of one JSON line each.
func (s *Server) logStream(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	if svc == "" {
		http.Error(w, "name a service", http.StatusBadRequest)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	fl.Flush()
	err := s.src.ServiceLogs(r.Context(), svc, api.LogsRequest{Follow: true, Tail: "200"}, func(l api.LogLine) error {
		b, _ := json.Marshal(l)
		if err := writeEvent(w, "line", string(b)); err != nil {
			return err
		}
		fl.Flush()
		return nil
	})
	if err != nil && r.Context().Err() == nil {
		writeEvent(w, "failed", err.Error())
		fl.Flush()
	}
}

// actionTimeout bounds an action started from a page.
const actionTimeout = 5 * time.Minute

// action runs scale, restart, remove or rollback on a service with the
// calls the CLI's commands make, then goes back to the services page
// with what happened.
func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	name, act := r.PathValue("name"), r.PathValue("action")
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	var msg string
	var err error
	switch act {
	case "scale":
		var n int
		n, err = strconv.Atoi(r.PostFormValue("replicas"))
		if err != nil || n < 0 || n > 1000 {
			err = fmt.Errorf("replicas must be a number from 0 to 1000")
			break
		}
		var res api.ServiceResult
		res, err = s.src.ScaleService(ctx, name, api.ScaleRequest{Replicas: n}, nil)
		msg = fmt.Sprintf("scaled %s to %d (%s)", name, n, summarize(res))
	case "restart":
		if _, err = s.src.StopService(ctx, name); err == nil {
			var res api.ServiceResult
			res, err = s.src.StartService(ctx, name)
			msg = fmt.Sprintf("restarted %s (%s)", name, summarize(res))
		}
	case "remove":
		var res api.ServiceResult
		res, err = s.src.RemoveService(ctx, name)
		msg = fmt.Sprintf("removed %s (%s)", name, summarize(res))
	case "rollback":
		var last string
		err = s.src.Rollback(ctx, name, api.RollbackRequest{By: "dashboard"}, func(e api.DeployEvent) error {
			if !e.Plan && e.Action != "" {
				last = e.Action
			}
			return nil
		})
		msg = fmt.Sprintf("rolled %s back (%s)", name, last)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		msg = fmt.Sprintf("%s %s failed: %v", act, name, err)
	}
	http.Redirect(w, r, Prefix+"services?msg="+url.QueryEscape(msg), http.StatusSeeOther)
}

func summarize(res api.ServiceResult) string {
	counts := map[string]int{}
	var failed []string
	for _, c := range res.Containers {
		if c.Error != "" {
			failed = append(failed, c.Machine+": "+c.Error)
			continue
		}
		counts[c.Action]++
	}
	var parts []string
	for _, a := range []string{"created", "started", "stopped", "removed"} {
		if counts[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
		}
	}
	parts = append(parts, failed...)
	if len(parts) == 0 {
		return "no containers changed"
	}
	return strings.Join(parts, ", ")
}

var funcs = template.FuncMap{
	"bytes": func(n uint64) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	},
	"memUsed": func(h HostInfo) string {
		if h.MemTotal == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f%% of %.1f GiB", 100*float64(h.MemTotal-h.MemAvail)/float64(h.MemTotal), float64(h.MemTotal)/(1<<30))
	},
	"rtt":  fmtRTT,
	"load": func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) },
	"join": strings.Join,
	"short": func(s string) string {
		if len(s) > 19 {
			return s[:19] + "…"
		}
		return s
	},
	"containersOf": func(cs []api.ContainerInfo, svc string) []api.ContainerInfo {
		var out []api.ContainerInfo
		for _, c := range cs {
			if c.Service == svc {
				out = append(out, c)
			}
		}
		return out
	},
	"routesOf": func(rs []api.IngressRoute, svc string) []api.IngressRoute {
		var out []api.IngressRoute
		for _, r := range rs {
			if r.Service == svc {
				out = append(out, r)
			}
		}
		return out
	},
	// certNote is a published host's certificate as a few words: its
	// state, and until when a valid one holds.
	"certNote": func(c *api.IngressCertificate) string {
		switch {
		case c == nil:
			return "plain HTTP"
		case c.State == "valid" && !c.NotAfter.IsZero():
			return fmt.Sprintf("certificate valid until %s (%d days)", c.NotAfter.UTC().Format("2006-01-02"), int(time.Until(c.NotAfter).Hours()/24))
		case c.Error != "":
			return "certificate " + c.State + ": " + c.Error
		}
		return "certificate " + c.State
	},
	"since": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
}
