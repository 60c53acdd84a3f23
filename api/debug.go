package api

import (
	"net/http"
	"net/http/pprof"
)

// registerDebug serves Go's profiles under /debug/pprof/ on the local API
// only (the unix socket: root and the uncloud group; not the command line,
// which may hold a join token), so an operator can
// see where an agent's memory and CPU go without restarting it:
//
//	curl --unix-socket /run/uncloud/uncloud.sock http://x/debug/pprof/heap > heap.pb
func registerDebug(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
