package ingress

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count the ingress's requests and their latency per host. They
// outlive an Ingress (the agent makes a new one when the role comes back)
// and belong to the agent's registry, so they are made once by the agent
// and given in Config.
//
// The host label is the route's host as published (a wildcard stays
// "*.example.com"), or "unmatched" for requests no route took: a
// client's Host header never becomes a label, so clients cannot make
// series without bound. The code label is the status class (2xx…5xx).
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// unmatchedHost labels requests for hosts no service publishes.
const unmatchedHost = "unmatched"

// NewMetrics registers the ingress's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uncloud_ingress_requests_total",
			Help: "HTTP requests the ingress answered, by published host (\"unmatched\": no route) and status class.",
		}, []string{"host", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "uncloud_ingress_request_duration_seconds",
			Help: "Time from a request's headers to the end of its response (the whole proxied exchange), by published host.",
			// From a cached redirect (sub-millisecond) to a slow backend.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"host"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ingress metrics: %w", err)
		}
	}
	return m, nil
}

// observe counts one finished request.
func (m *Metrics) observe(rt *Route, status int, took time.Duration) {
	host := unmatchedHost
	if rt != nil {
		host = rt.Host
	}
	m.requests.WithLabelValues(host, statusClass(status)).Inc()
	m.duration.WithLabelValues(host).Observe(took.Seconds())
}

// statusClass is "2xx" for 204; a status outside 100-599 is "other".
func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	// Constant strings: the label costs no allocation per request.
	return [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}[status/100-1]
}
