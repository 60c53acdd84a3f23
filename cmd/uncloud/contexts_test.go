package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestContextStoreModesAndRoundTrip(t *testing.T) {
	s := contextStore{dir: filepath.Join(t.TempDir(), "cfg", "uncloud")}
	if f, err := s.load(); err != nil || len(f.Contexts) != 0 {
		t.Fatalf("no file: %+v, %v; want no contexts, no error", f, err)
	}
	want := contextFile{Current: "prod", Contexts: []contextEntry{{
		Name: "prod", Targets: []string{"ssh://root@203.0.113.1", "/run/x.sock"},
		Learned: []learnedTarget{{Machine: "m3", Target: "ssh://root@203.0.113.3"}}, LearnedAt: time.Unix(1700000000, 0).UTC(),
	}}}
	if err := s.save(want); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{s.dir: 0o700, s.path(): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	got, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if names := dirNames(t, s.dir); !slices.Equal(names, []string{"contexts.json"}) {
		t.Fatalf("files after save: %v, want only contexts.json (no temp file left)", names)
	}
}

// TestContextStoreConcurrentUpdates: updates from several processes'
// worth of goroutines all land (each adds its own context).
func TestContextStoreConcurrentUpdates(t *testing.T) {
	s := contextStore{dir: t.TempDir()}
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- s.update(func(f *contextFile) error {
				f.Contexts = append(f.Contexts, contextEntry{Name: fmt.Sprintf("c%d", i), Targets: []string{"/x.sock"}})
				return nil
			})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f, err := s.load()
	if err != nil || len(f.Contexts) != n {
		t.Fatalf("%d contexts after %d concurrent adds (%v)", len(f.Contexts), n, err)
	}
}

// TestContextStoreCrashSafety: a write that cannot finish leaves the old
// file as it was and no temp file; a temp file left by a crash before the
// rename is not read.
func TestContextStoreCrashSafety(t *testing.T) {
	s := contextStore{dir: t.TempDir()}
	old := contextFile{Contexts: []contextEntry{{Name: "a", Targets: []string{"/a.sock"}}}}
	if err := s.save(old); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(s.path())
	// A crash between writing the temp file and the rename leaves this.
	os.WriteFile(filepath.Join(s.dir, ".contexts-123.json"), []byte(`{"contexts": [{"na`), 0o600)
	if f, err := s.load(); err != nil || f.find("a") == nil {
		t.Fatalf("load beside a torn temp file: %+v, %v", f, err)
	}
	os.Remove(filepath.Join(s.dir, ".contexts-123.json"))

	// The rename fails (the target is a non-empty directory): the update
	// reports it and nothing changes.
	s2 := contextStore{dir: t.TempDir()}
	os.MkdirAll(filepath.Join(s2.path(), "x"), 0o700)
	if err := s2.save(old); err == nil || !strings.Contains(err.Error(), "replace") {
		t.Fatalf("save over a directory: %v, want a replace error", err)
	}
	if names := dirNames(t, s2.dir); !slices.Equal(names, []string{"contexts.json"}) {
		t.Fatalf("after a failed save: %v, want the temp file gone", names)
	}
	after, _ := os.ReadFile(s.path())
	if !bytes.Equal(before, after) {
		t.Fatal("the good file changed")
	}
}

func TestContextStoreBadFile(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"not json", "{", "is not valid (fix or remove it)"},
		{"bad name", `{"contexts":[{"name":"a b","targets":["/x"]}]}`, `context name "a b"`},
		{"no targets", `{"contexts":[{"name":"a","targets":[]}]}`, "context a: no machines"},
		{"bad target", `{"contexts":[{"name":"a","targets":["http://x"]}]}`, `target "http://x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := contextStore{dir: t.TempDir()}
			os.WriteFile(s.path(), []byte(tc.content), 0o600)
			_, err := s.load()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), s.path()) {
				t.Fatalf("load: %v; want the path and %q", err, tc.want)
			}
			g := &globals{contexts: &s}
			if _, err := g.client(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("a command with a bad file: %v; want %q", err, tc.want)
			}
		})
	}
}

func TestCheckContext(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets []string
		want    string // "" for valid
	}{
		{"prod", []string{"ssh://root@203.0.113.1", "ssh://pi-1", "ssh://u@[2001:db8::1]:2222/run/u.sock", "unix:///run/a.sock", "/run/b.sock"}, ""},
		{"", []string{"/x"}, "context name"},
		{"-x", []string{"/x"}, "context name"},
		{"a/b", []string{"/x"}, "context name"},
		{"prod", nil, "no machines"},
		{"prod", []string{"ssh://"}, "no host"},
		{"prod", []string{"unix://"}, "no socket path"},
		{"prod", []string{"tcp://1.2.3.4:22"}, "want ssh://"},
		{"prod", []string{"ssh://root:hunter2@host"}, "password"},
	} {
		err := checkContext(tc.name, tc.targets)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %v: %v, want %q", tc.name, tc.targets, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// contextAgent is a real local API on a unix socket with a backend that
// answers Status (as name, or with an error) and Machines.
type contextAgent struct {
	api.Backend
	api.ContainerBackend
	name      string
	network   string
	statusErr error
	machines  []api.MachineInfo
}

func (a contextAgent) Status(context.Context) (api.Status, error) {
	return api.Status{Name: a.name, NetworkID: a.network}, a.statusErr
}

func (a contextAgent) Machines(context.Context) ([]api.MachineInfo, error) { return a.machines, nil }

// serveAgent serves b's local API on a unix socket of its own, as the
// agent does, and returns the socket's path.
func serveAgent(t *testing.T, b api.Backend) string {
	t.Helper()
	return serveAgentAt(t, filepath.Join(t.TempDir(), "agent.sock"), b)
}

// serveAgentAt serves b's local API on the unix socket sock until the
// test ends and returns sock.
func serveAgentAt(t *testing.T, sock string, b api.Backend) string {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.ServeLocal(ctx, ln, b) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeLocal: %v", err)
		}
	})
	return sock
}

// silentSocket accepts connections and never answers, as a machine whose
// agent hangs.
func silentSocket(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return sock
}

// TestContextFallThrough: a context whose first machine has no agent and
// whose second accepts but never answers reaches the third; each miss is
// one line on stderr naming the next; an agent that answers with an
// error is used, not skipped.
func TestContextFallThrough(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	silent := silentSocket(t)
	good := serveAgent(t, contextAgent{name: "m3"})
	failing := serveAgent(t, contextAgent{name: "m0", statusErr: errors.New("disk on fire")})

	s := contextStore{dir: t.TempDir()}
	err := s.save(contextFile{Current: "prod", Contexts: []contextEntry{
		{Name: "prod", Targets: []string{missing, "unix://" + silent, good}, LearnedAt: time.Now()},
		{Name: "erring", Targets: []string{failing, good}, LearnedAt: time.Now()},
		{Name: "dead", Targets: []string{missing, missing + "2"}, LearnedAt: time.Now()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	g := &globals{contexts: &s, Stderr: &stderr, probeTimeout: 3 * time.Second}
	c, err := g.client()
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(context.Background())
	c.Close()
	if err != nil || st.Name != "m3" {
		t.Fatalf("reached %q (%v), want m3", st.Name, err)
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 2 ||
		lines[0] != missing+" did not answer: connect: no such file or directory; trying unix://"+silent ||
		lines[1] != "unix://"+silent+" did not answer: no answer within 3s; trying "+good {
		t.Fatalf("stderr:\n%s\nwant two lines: missing -> silent, silent -> good", stderr.String())
	}
	t.Logf("stderr:\n%s", stderr.String())

	// --context picks another; an answer with an error is an answer.
	stderr.Reset()
	g.Context = "erring"
	if c, err = g.client(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c.Target != failing || stderr.Len() != 0 {
		t.Fatalf("erring agent: client for %s, stderr %q; want %s and nothing said", c.Target, stderr.String(), failing)
	}

	// None answers: one error naming each.
	stderr.Reset()
	g.Context = "dead"
	_, err = g.client()
	if err == nil || !strings.Contains(err.Error(), "context dead: no machine answered") ||
		!strings.Contains(err.Error(), missing+": ") || !strings.Contains(err.Error(), missing+"2: ") {
		t.Fatalf("all down: %v", err)
	}
	if strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("all down: stderr %q, want one line (the last has no next)", stderr.String())
	}

	// --connect wins over any context; an unknown context is an error.
	g.Context, g.Connect = "prod", good
	if c, err = g.client(); err != nil || c.Target != good {
		t.Fatalf("--connect: %v %v", c, err)
	}
	c.Close()
	g.Context, g.Connect = "nope", ""
	if _, err := g.client(); err == nil || !strings.Contains(err.Error(), `no context "nope"`) {
		t.Fatalf("unknown context: %v", err)
	}
}

func TestContextTriesOrder(t *testing.T) {
	e := contextEntry{Name: "p", Targets: []string{"ssh://a", "ssh://b"},
		Learned: []learnedTarget{{Machine: "m2", Target: "ssh://b"}, {Machine: "m3", Target: "ssh://c"}}}
	var got []string
	for _, t := range e.tries() {
		got = append(got, t.String())
	}
	if want := []string{"ssh://a", "ssh://b", "m3 (ssh://c)"}; !slices.Equal(got, want) {
		t.Fatalf("tries %v, want %v (the user's first, a learned duplicate once)", got, want)
	}
}

func TestLearnedTargets(t *testing.T) {
	ms := []api.MachineInfo{
		{Name: "m1", State: "self", Subnet: "fd8a:1::/64"},
		{Name: "m2", State: "alive", Endpoint: "198.51.100.2:51820"},
		{Name: "m0", State: "down", Endpoint: "198.51.100.9:51820"},
		{Name: "m3", State: "alive", Endpoint: "relay via m2"},
		{Name: "m4", State: "alive"},
		{Name: "m5", State: "suspect", Endpoint: "[2001:db8::5]:51820"},
		{Name: "m6", State: "alive", Endpoint: "127.0.0.1:51820"},
		{Name: "m7", State: "alive", Endpoint: "[fd8a:1::7]:51820"},       // a mesh address
		{Name: "m8", State: "alive", Endpoint: "198.51.100.2:40000"},      // behind m2's NAT
		{Name: "m9", State: "alive", Endpoint: "[::ffff:10.0.0.9]:51820"}, // a LAN: the user may be on it
	}
	cfg := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		via  string
		want []string
	}{
		{"ssh://ops@203.0.113.1:2222/run/u.sock", []string{
			"m2 ssh://ops@198.51.100.2:2222/run/u.sock", "m5 ssh://ops@[2001:db8::5]:2222/run/u.sock",
			"m9 ssh://ops@10.0.0.9:2222/run/u.sock", "m0 ssh://ops@198.51.100.9:2222/run/u.sock"}},
		{"ssh://root@203.0.113.1", []string{
			"m2 ssh://root@198.51.100.2", "m5 ssh://root@[2001:db8::5]",
			"m9 ssh://root@10.0.0.9", "m0 ssh://root@198.51.100.9"}},
	} {
		got, err := learnedTargets(tc.via, cfg, slices.Clone(ms))
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, l := range got {
			s = append(s, l.Machine+" "+l.Target)
		}
		if !slices.Equal(s, tc.want) {
			t.Errorf("via %s:\n got %v\nwant %v", tc.via, s, tc.want)
		}
	}
}

// TestContextLearn: after a call through a context, the network's other
// machines are kept as learned targets after the user's, which stay as
// they were; and are asked again only once learnEvery has passed.
func TestContextLearn(t *testing.T) {
	agent := serveAgent(t, contextAgent{name: "m1", machines: []api.MachineInfo{
		{Name: "m1", State: "self"},
		{Name: "m2", State: "alive", Endpoint: "198.51.100.2:51820"},
	}})
	s := contextStore{dir: t.TempDir()}
	user := []string{"ssh://ops@203.0.113.1:2222", "ssh://ops@203.0.113.5"}
	if err := s.save(contextFile{Contexts: []contextEntry{{Name: "prod", Targets: user}}}); err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(agent, api.SSHOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("HOME", t.TempDir()) // no ~/.ssh/config of the user's
	if err := learn(context.Background(), s, "prod", c, user[0]); err != nil {
		t.Fatal(err)
	}
	f, _ := s.load()
	e := f.find("prod")
	if !slices.Equal(e.Targets, user) {
		t.Fatalf("the user's targets changed: %v", e.Targets)
	}
	if len(e.Learned) != 1 || e.Learned[0] != (learnedTarget{Machine: "m2", Target: "ssh://ops@198.51.100.2:2222"}) || e.LearnedAt.IsZero() {
		t.Fatalf("learned %+v at %v", e.Learned, e.LearnedAt)
	}

	// Through g.client: a context that learned recently is not asked
	// again; one whose learning is stale is (a socket target only marks
	// the time: it says nothing about reaching the others).
	stamp := time.Now().Add(-time.Hour)
	s.save(contextFile{Contexts: []contextEntry{{Name: "here", Targets: []string{agent}, LearnedAt: stamp}}})
	g := &globals{contexts: &s, Context: "here", Stderr: &bytes.Buffer{}}
	c2, err := g.client()
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	f, _ = s.load()
	if !f.find("here").LearnedAt.After(stamp) {
		t.Fatal("stale learning not refreshed")
	}

	var out bytes.Buffer
	fmt.Fprint(&out, e.tries())
	if !strings.Contains(out.String(), "m2 (ssh://ops@198.51.100.2:2222)") {
		t.Fatalf("tries: %s", out.String())
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
