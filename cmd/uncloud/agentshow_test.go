package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// fakeAgent answers the local API on a unix socket with answers[path],
// the same for every method, and 404 for any other path.
func fakeAgent(t *testing.T, answers map[string]any) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(v)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// captureStdout runs f with os.Stdout going to a pipe (the commands
// print there) and returns what it printed.
func captureStdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		out <- b
	}()
	old := os.Stdout
	os.Stdout = w
	ferr := f()
	os.Stdout = old
	w.Close()
	return string(<-out), ferr
}

// filled returns a T with every field set (strings "x", numbers 1,
// booleans true, one element in each slice and map), so a renderer or
// an encoder that drops a field shows. Times stay zero, so that "ago"
// columns do not depend on the clock.
func filled[T any]() T {
	var v T
	fill(reflect.ValueOf(&v).Elem(), 0)
	return v
}

func fill(v reflect.Value, depth int) {
	if depth > 6 || !v.CanSet() {
		return
	}
	switch v.Type() {
	case reflect.TypeFor[time.Time]():
		return
	case reflect.TypeFor[json.RawMessage]():
		v.SetBytes([]byte(`{"k":"v"}`))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), depth+1)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), depth+1)
		}
	}
}

// indentJSON is what -o json must print for an answer v: the answer as
// the client decoded it, indented, and nothing else.
func indentJSON[T any](t *testing.T, v T) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back T
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(back); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestShowCommandsJSON runs each command that shows one agent answer
// with -o json against a fake agent: it prints exactly that answer,
// indented; and with its table form, something else that is not empty.
func TestShowCommandsJSON(t *testing.T) {
	status, mesh := filled[api.Status](), filled[api.MeshStatus]()
	dnsNames, dnsAnswer := filled[api.DNSNames](), filled[api.DNSAnswer]()
	ingress, hostNet := filled[api.IngressStatus](), filled[api.HostNet]()
	ingress.Error = "" // a running ingress with no error renders its routes
	state, volumes := filled[[]api.StateEntry](), filled[[]api.VolumeInfo]()
	history, containers := filled[[]api.ServiceVersion](), filled[[]api.ContainerInfo]()
	services, machines := filled[[]api.ServiceInfo](), filled[[]api.MachineInfo]()
	tokens, images := filled[[]api.TokenInfo](), filled[api.ImageList]()
	sock := fakeAgent(t, map[string]any{
		api.PathStatus: status, api.PathMesh: mesh, api.PathDNS: dnsNames, api.PathDNSQuery: dnsAnswer,
		api.PathIngress: ingress, api.PathHostNet: hostNet, api.PathState: state, api.PathVolumes: volumes,
		api.PathServices + "/web/history": history, api.PathContainers: containers, api.PathServices: services,
		api.PathMachines: machines, api.PathTokens: tokens, api.PathImageList: images,
	})
	g := &globals{Connect: sock}
	for _, tc := range []struct {
		name string
		run  func(output string) error
		want string
	}{
		{"status", func(o string) error { return statusCmd{Output: o}.Run(g) }, indentJSON(t, status)},
		{"mesh", func(o string) error { return meshCmd{Output: o}.Run(g) }, indentJSON(t, mesh)},
		{"dns ls", func(o string) error { return dnsLsCmd{Output: o}.Run(g) }, indentJSON(t, dnsNames)},
		{"dns query", func(o string) error { return dnsQueryCmd{Name: "web.internal", Type: "A", Output: o}.Run(g) },
			indentJSON(t, dnsAnswer)},
		{"ingress ls", func(o string) error { return ingressLsCmd{Output: o}.Run(g) }, indentJSON(t, ingress)},
		{"expose ls", func(o string) error { return exposeLsCmd{Output: o}.Run(g) }, indentJSON(t, hostNet)},
		{"proxy set", func(o string) error { return proxySetCmd{SOCKS5: "1080", Output: o}.Run(g) },
			indentJSON(t, hostNet)},
		{"state ls", func(o string) error { return stateLsCmd{Prefix: "/", Output: o}.Run(g) }, indentJSON(t, state)},
		{"volume ls", func(o string) error { return volumeLsCmd{Output: o}.Run(g) }, indentJSON(t, volumes)},
		{"history", func(o string) error { return historyCmd{Service: "web", Output: o}.Run(g) },
			indentJSON(t, history)},
		{"ps", func(o string) error { return psCmd{Output: o}.Run(g) }, indentJSON(t, containers)},
		{"ls", func(o string) error { return lsCmd{Output: o}.Run(g) }, indentJSON(t, services)},
		{"ls -p other", func(o string) error { return lsCmd{Project: "other", Output: o}.Run(g) }, "[]\n"},
		{"machine ls", func(o string) error { return machineLsCmd{Output: o}.Run(g) }, indentJSON(t, machines)},
		{"token ls", func(o string) error { return tokenLsCmd{Output: o}.Run(g) }, indentJSON(t, tokens)},
		{"image ls", func(o string) error { return imageLsCmd{Output: o}.Run(g) }, indentJSON(t, images)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := captureStdout(t, func() error { return tc.run("json") })
			if err != nil {
				t.Fatalf("-o json: %v", err)
			}
			if got != tc.want {
				t.Errorf("-o json printed\n%s\nwant\n%s", got, tc.want)
			}
			table, err := captureStdout(t, func() error { return tc.run("table") })
			if err != nil {
				t.Fatalf("-o table: %v", err)
			}
			if table == "" || table == got {
				t.Errorf("-o table printed %q", table)
			}
		})
	}
}
