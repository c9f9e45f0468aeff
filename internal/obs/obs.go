// Package obs provides what every binary exposes to operators: a Prometheus
// registry with build info, /metrics, /healthz, /readyz, and the logger.
package obs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go and process collectors and
// sharelinks_build_info.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sharelinks_build_info", Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(info)
	return reg
}

// NewLogger builds the process logger: JSON for production, text for dev.
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Check reports whether one dependency is usable.
type Check func(ctx context.Context) error

// Readiness runs named checks for /readyz.
type Readiness struct {
	mu     sync.Mutex
	checks map[string]Check
}

// NewReadiness builds an empty set of checks.
func NewReadiness() *Readiness { return &Readiness{checks: map[string]Check{}} }

// Add registers a check.
func (r *Readiness) Add(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = c
}

// run runs every check within ctx and returns each one's error.
func (r *Readiness) run(ctx context.Context) map[string]error {
	r.mu.Lock()
	checks := make(map[string]Check, len(r.checks))
	for k, v := range r.checks {
		checks[k] = v
	}
	r.mu.Unlock()
	results := make(map[string]error, len(checks))
	for name, c := range checks {
		results[name] = c(ctx)
	}
	return results
}

// ServeHTTP answers 200 when every check passes, 503 otherwise, with each
// check's result.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	results := map[string]string{}
	status, code := "ok", http.StatusOK
	for name, err := range r.run(ctx) {
		if err != nil {
			results[name] = err.Error()
			status, code = "unavailable", http.StatusServiceUnavailable
		} else {
			results[name] = "ok"
		}
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": results})
}

// readyDesc is sharelinks_ready: /readyz's checks as a metric, so an
// alert sees a worker that cannot reach Postgres or NATS even when no
// traffic fails for it (a consumer holding events through an outage
// counts nothing).
var readyDesc = prometheus.NewDesc("sharelinks_ready",
	"Whether each /readyz check passes when scraped (postgres, nats, consumers): 1 yes, 0 no.", []string{"check"}, nil)

// Describe makes Readiness a Prometheus collector of sharelinks_ready.
func (r *Readiness) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

// Collect runs the checks, as /readyz does, for sharelinks_ready.
func (r *Readiness) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for name, err := range r.run(ctx) {
		v := 1.0
		if err != nil {
			v = 0
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, name)
	}
}

// Healthz answers 200 while the process runs.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Handle adds /metrics, /healthz and /readyz to mux, and the readiness
// checks to reg as sharelinks_ready.
func Handle(mux *http.ServeMux, reg *prometheus.Registry, ready *Readiness) {
	reg.MustRegister(ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", Healthz)
	mux.Handle("GET /readyz", ready)
	if debugHandlers != nil {
		debugHandlers(mux)
	}
}

// debugHandlers is set only in binaries built with -tags pprof (see
// pprof.go): profiling endpoints are for benchmarks, never for production.
var debugHandlers func(*http.ServeMux)

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
