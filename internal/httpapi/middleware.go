package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
)

// Metrics are the HTTP edge's metrics.
type Metrics struct {
	Requests         *prometheus.CounterVec
	Duration         *prometheus.HistogramVec
	OTPRequests      *prometheus.CounterVec
	OTPVerifications *prometheus.CounterVec
	// Replays counts answers given from an earlier request's result
	// (Idempotency-Key), by operation: clients retrying in a storm show
	// here before anywhere else.
	Replays *prometheus.CounterVec

	seen sync.Map // route and method pairs whose server-error series exist
}

// serverErrorCodes are the 5xx codes the api answers with (internal,
// upstream, unavailable): each route gets these series at zero when it
// first serves, so the first error on it is an increase an alert sees.
var serverErrorCodes = []string{"500", "502", "503"}

// request counts one answered request.
func (m *Metrics) request(route, method string, code int) {
	if _, done := m.seen.LoadOrStore(route+" "+method, true); !done {
		for _, c := range serverErrorCodes {
			m.Requests.WithLabelValues(route, method, c)
		}
	}
	m.Requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
}

// NewMetrics registers the HTTP metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sharelinks_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sharelinks_http_request_duration_seconds",
			Help:    "HTTP request duration by route pattern and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
	}
	m.OTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharelinks_otp_requests_total", Help: "One-time code requests by result.",
	}, []string{"result"})
	m.OTPVerifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharelinks_otp_verifications_total", Help: "One-time code verifications by result.",
	}, []string{"result"})
	// Every result exported as zero from the start: an alert on the first
	// failed send needs a series that was there before it.
	for _, r := range []string{"accepted", "throttled", "failed_send"} {
		m.OTPRequests.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "bad_code", "locked", "expired"} {
		m.OTPVerifications.WithLabelValues(r)
	}
	m.Replays = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharelinks_idempotent_replays_total",
		Help: "Requests answered with an earlier request's result (same Idempotency-Key), by operation.",
	}, []string{"operation"})
	for _, op := range []string{link.OpCreateLinks, link.OpSendLinks} {
		m.Replays.WithLabelValues(op)
	}
	reg.MustRegister(m.Requests, m.Duration, m.OTPRequests, m.OTPVerifications, m.Replays)
	return m
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyOwner
)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument adds a request id and the request's deadline (timeout, when
// positive: a database that hangs, by a partition or a lock, then costs a
// client timeout and a 503, not a request held open until TCP gives up),
// recovers panics as 500s, and records metrics by route pattern (never
// the raw path: it holds link tokens). The mux must get the very request
// whose Pattern is read here, so nothing may wrap it between the two.
func instrument(next http.Handler, m *Metrics, log *slog.Logger, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		ctx := context.WithValue(r.Context(), keyRequestID, id)
		if timeout > 0 && !streamsLong(r) {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p != nil && p != http.ErrAbortHandler {
				log.Error("panic in handler", "panic", p, "request_id", id, "route", r.Pattern)
				if sw.code == 0 {
					writeError(sw, r, log, apperr.New(apperr.Internal, "internal", "internal error; request id %s", id))
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			method := methodLabel(r.Method)
			m.request(route, method, code)
			m.Duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			if p == http.ErrAbortHandler {
				// A stream that failed after its 200: the server cuts the
				// connection, so the client sees an error, not a short body.
				panic(p)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// exportTimeout bounds an audit export, which streams for as long as the
// chain is long (about 66,000 events a second through HTTP) and so is
// exempt from the request timeout.
const exportTimeout = 10 * time.Minute

// streamsLong reports a request that streams a long answer under its own
// bound (exportTimeout) rather than the request timeout. It is read from
// the path because the mux has not matched the request yet here.
func streamsLong(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/audit/export")
}

// methodLabel is the method as a label value: a client can send any
// token as a method, and each would otherwise be a new series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// OTPRequest counts a code request by result (accepted, throttled, failed_send).
func (m *Metrics) OTPRequest(result string) { m.OTPRequests.WithLabelValues(result).Inc() }

// OTPVerification counts a code verification by result (ok, bad_code, locked, expired).
func (m *Metrics) OTPVerification(result string) { m.OTPVerifications.WithLabelValues(result).Inc() }
