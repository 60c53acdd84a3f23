package api

import (
	"context"
	"net"
	"net/http"
	"time"
)

// ServeLocalHandler serves h (the local API with more routes, such as the
// dashboard's) on ln until ctx ends.
func ServeLocalHandler(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
