// Package metrics defines the Prometheus metrics of the coordinator and the nodes and
// serves them over HTTP. Every process keeps its metrics in its own registry, created
// by NewRegistry, never in the client library's global one, so that tests and
// several servers in one process do not collide.
package metrics

import (
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Serve serves reg at /metrics and a liveness check at /healthz, which always
// returns 200, on l in a new goroutine. Stop it with the returned server's Shutdown
// or Close, which also closes l.
func Serve(l net.Listener, reg *prometheus.Registry) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	server := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	// Serve returns http.ErrServerClosed after Shutdown or Close, which is the
	// only way it stops short of a listener failure.
	go func() { _ = server.Serve(l) }()
	return server
}

// durationBuckets are histogram buckets in seconds, from 10 ms to about 82 s.
var durationBuckets = prometheus.ExponentialBuckets(0.01, 2, 14)
