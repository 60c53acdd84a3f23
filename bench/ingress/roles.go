package main

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/ingress"
	"github.com/uncloud-mesh/uncloud/record"
)

// runBackend is the tiny backend: 13 bytes of text per request.
func runBackend(ctx context.Context, port int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	body := []byte("hello, world\n")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// ingressSetup is what the parent passes to the ingress role on stdin.
type ingressSetup struct {
	Dir         string `json:"dir"`
	HTTPAddr    string `json:"http"`
	HTTPSAddr   string `json:"https"`
	BackendPort int    `json:"backend_port"`
	CertFile    string `json:"cert"`
	KeyFile     string `json:"key"`
	Profile     string `json:"profile"`
	ProfileFor  string `json:"profile_for"`
	AccessLog   bool   `json:"access_log"`
}

// runIngress runs the uncloud ingress as the agent would, from a real
// (single-machine) replicated state holding one service and one container.
func runIngress(ctx context.Context, log *slog.Logger) error {
	// The agent's GC settings (cmd/uncloud/agent.go), which users run
	// the ingress under: GOGC=10 and a 128 MiB soft limit.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(128 << 20)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(10)
	}
	var s ingressSetup
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil {
		return fmt.Errorf("ingress setup: %w", err)
	}
	st, err := crdt.Open(ctx, crdt.Config{Dir: s.Dir, Name: "bench", Log: log})
	if err != nil {
		return err
	}
	defer st.Close()
	svc := &record.Service{Name: "bench", Ports: []string{fmt.Sprintf("localhost:%d/http", s.BackendPort)}}
	ctr := &record.Container{MachineID: "bench", ID: "c1", Name: "bench-1", Service: "bench", Address: "127.0.0.1", State: "running"}
	for _, r := range []crdt.Record{svc, ctr} {
		if err := st.Put(ctx, r.Key(), r); err != nil {
			return err
		}
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return err
	}
	var access *slog.Logger
	if s.AccessLog {
		access = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sealKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	in, err := ingress.Start(ctx, ingress.Config{
		MachineID: "bench", State: st, HTTPAddr: s.HTTPAddr, HTTPSAddr: s.HTTPSAddr, SealKey: sealKey,
		ACME: ingress.ACMEConfig{Disable: true}, Certificates: []tls.Certificate{cert},
		AccessLog: access, Log: log,
	})
	if err != nil {
		return err
	}
	defer in.Close()
	// Wait for the route, then say ready.
	for len(in.Routes()) == 0 || len(in.Routes()[0].Backends) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Profile != "" {
		f, err := os.Create(s.Profile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
