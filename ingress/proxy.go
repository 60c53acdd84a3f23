package ingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"
)

// DialFunc opens a connection to a container; in netstack mode it is the
// netstack's dialer, since the mesh exists only inside the agent.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// forwarder is what every route's proxy shares: one upstream transport
// (so idle connections to a container are reused whichever route used
// them), one buffer pool, one policy.
type forwarder struct {
	transport   *http.Transport
	up          *upstream // plain requests; the rest go through transport
	buffers     *bufferPool
	policy      string
	failTimeout time.Duration
	respTimeout time.Duration // Config.ResponseTimeout
	log         *slog.Logger
}

// errNoBackend: the route has no container this machine can reach.
var errNoBackend = errors.New("no running container of the service can be reached")

// dialError marks a failure to connect: nothing of the request was sent,
// so it can be retried on another container whatever its method and body.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func newForwarder(dial DialFunc, backends *pool, policy string, failTimeout, respTimeout time.Duration, log *slog.Logger) *forwarder {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			if b := backends.lookup(addr); b != nil {
				return b.track(c), nil
			}
			return c, nil
		},
		// Containers speak HTTP/1.1; keep many idle connections per
		// container so a busy route does not redial (the default keeps 2).
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The response timeout's wait for the head, for what the direct
		// path does not take (upstream.roundTripFallback); newUpstream
		// takes it from here too.
		ResponseHeaderTimeout: respTimeout,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	return &forwarder{transport: t, up: newUpstream(t), buffers: newBufferPool(), policy: policy,
		failTimeout: failTimeout, respTimeout: respTimeout, log: log}
}

// routeHandler proxies one route's requests. It is built with the table,
// so serving a request allocates nothing for the route itself.
type routeHandler struct {
	rp      *httputil.ReverseProxy
	maxBody int64
}

func (f *forwarder) handlerFor(r *Route, maxBody int64) *routeHandler {
	rt := &routeTransport{route: r, f: f}
	return &routeHandler{maxBody: maxBody, rp: &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = r.Service // replaced by the chosen container in RoundTrip
			pr.SetXForwarded()
		},
		Transport:    rt,
		BufferPool:   f.buffers,
		ErrorHandler: f.errorHandler(r),
		ErrorLog:     slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
	}}
}

// routeTransport picks a container per request and retries a failed
// connection once on another one.
type routeTransport struct {
	route *Route
	f     *forwarder
}

func (t *routeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := pick(t.route, t.f.policy)
	if b == nil {
		return nil, errNoBackend
	}
	if req.Body != nil && req.Body != http.NoBody {
		// The transport closes the body when a try fails, even a dial
		// that sent nothing; the server closes the inbound body itself.
		req.Body = keepOpen{req.Body}
	}
	// During a rollout two containers of a service can fail at once (the
	// old one going, the new one not yet listening), so a retryable
	// failure moves on to each other container in turn, up to maxTries.
	var tried []*backend
	for {
		resp, err := t.try(req, b)
		if err == nil || !t.retryable(req, err) {
			return resp, err
		}
		b.markFailed(t.f.failTimeout)
		t.f.log.Warn("container failed; put aside", "service", t.route.Service, "container", b.name,
			"addr", b.addr, "for", t.f.failTimeout, "err", err)
		tried = append(tried, b)
		if len(tried) >= maxTries {
			return nil, err
		}
		if b = pick(t.route, t.f.policy, tried...); b == nil {
			return nil, err
		}
	}
}

// maxTries bounds the containers one request is tried on: a service whose
// containers all refuse is answered 502 without a dial to every one.
const maxTries = 3

func (t *routeTransport) try(req *http.Request, b *backend) (*http.Response, error) {
	req.URL.Host = b.addr
	b.inflight.Add(1)
	resp, err := t.f.up.RoundTrip(req)
	if err != nil {
		b.inflight.Add(-1)
		return nil, err
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
		// An upgraded connection (websocket): ReverseProxy needs the
		// writer, and the container stays busy until it closes.
		resp.Body = &countedRWC{ReadWriteCloser: rwc, b: b}
	} else {
		resp.Body = &countedBody{ReadCloser: resp.Body, b: b}
	}
	return resp, nil
}

// retryable: a connection that could not be made, or a request without a
// body whose upstream failed before answering (the client is still there),
// but not one the container took and did not answer in time: it may have
// had effects.
func (t *routeTransport) retryable(req *http.Request, err error) bool {
	if req.Context().Err() != nil || errors.Is(err, errResponseTimeout) {
		return false
	}
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	return req.Body == nil || req.Body == http.NoBody
}

type keepOpen struct{ io.Reader }

func (keepOpen) Close() error { return nil }

// countedBody ends the in-flight count of a backend when the response
// body is closed, once.
type countedBody struct {
	io.ReadCloser
	b      *backend
	closed atomic.Bool
}

func (c *countedBody) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.b.inflight.Add(-1)
	}
	return c.ReadCloser.Close()
}

type countedRWC struct {
	io.ReadWriteCloser
	b      *backend
	closed atomic.Bool
}

func (c *countedRWC) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.b.inflight.Add(-1)
	}
	return c.ReadWriteCloser.Close()
}

func (f *forwarder) errorHandler(r *Route) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, req *http.Request, err error) {
		if req.Context().Err() != nil {
			return // the client went away; nobody to answer
		}
		if errors.Is(err, errNoBackend) {
			f.log.Warn("no container to serve", "host", req.Host, "service", r.Service)
			plainError(w, http.StatusBadGateway, fmt.Sprintf("502 bad gateway: service %s has no running container this machine can reach\n", r.Service))
			return
		}
		if errors.Is(err, errResponseTimeout) {
			f.log.Warn("container did not answer in time", "host", req.Host, "service", r.Service, "err", err)
			plainError(w, http.StatusGatewayTimeout, f.timeoutMessage(r))
			return
		}
		f.log.Warn("upstream failed", "host", req.Host, "service", r.Service, "err", err)
		plainError(w, http.StatusBadGateway, fmt.Sprintf("502 bad gateway: service %s did not answer\n", r.Service))
	}
}

// timeoutMessage is the body of a 504 (an error path: it may allocate).
func (f *forwarder) timeoutMessage(r *Route) string {
	return fmt.Sprintf("504 gateway timeout: service %s did not answer within %s\n", r.Service, f.respTimeout)
}

func plainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

// bufferPool recycles the 32 KiB copy buffers of response bodies. It
// pools array pointers: converting the slice back costs no allocation.
type bufferPool struct{ p sync.Pool }

const copyBufferSize = 32 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (p *bufferPool) Get() []byte { return p.p.Get().(*[copyBufferSize]byte)[:] }

func (p *bufferPool) Put(b []byte) {
	if len(b) == copyBufferSize {
		p.p.Put((*[copyBufferSize]byte)(b))
	}
}
