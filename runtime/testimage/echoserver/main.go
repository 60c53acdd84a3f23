// Command echoserver is the test workload of the runtime tests: a static
// HTTP server that answers with its host name, the address it was reached
// at and the address the request came from (so a test sees whether
// anything rewrote the source). "echoserver get URL" fetches a URL and
// prints the answer, which lets a test make one container call another
// (the image has nothing else in it).
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "get" {
		os.Exit(get(os.Args[2]))
	}
	addr := ":8080"
	if p := os.Getenv("PORT"); p != "" {
		addr = ":" + p
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		remote, _, _ := net.SplitHostPort(r.RemoteAddr)
		localIP := ""
		if local != nil {
			localIP, _, _ = net.SplitHostPort(local.String())
		}
		fmt.Printf("request %s from %s\n", r.URL.Path, remote)
		fmt.Fprintf(w, "host=%s addr=%s remote=%s\n", host, localIP, remote)
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		body, err := fetch(r.Context(), r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(body)
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("exiting on request")
		os.Exit(3)
	})
	fmt.Printf("listening on %s as %s\n", addr, host)
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func fetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

func get(url string) int {
	body, err := fetch(context.Background(), url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write(body)
	return 0
}
