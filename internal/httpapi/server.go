package httpapi

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/grant"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/obs"
	"github.com/sharelinks/sharelinks/internal/webhook"
)

// Config is the edge's own configuration.
type Config struct {
	PublicBaseURL string
	// Pages renders the recipient web pages; nil serves a bare page.
	Pages Pages
	// Metrics, when set, are shared with the pages (OTP counters); else
	// New registers its own.
	Metrics *Metrics
	// RequestTimeout bounds each request's work (its context's deadline);
	// a request past it answers 503. Zero: no bound.
	RequestTimeout time.Duration
	// TrustedProxies are the operator's proxies in front of the api,
	// whose X-Forwarded-For names the client (see behindProxies).
	TrustedProxies []netip.Prefix
	// Evidence signs the heads of audit exports; nil leaves the export
	// routes out (handlers built for other tests).
	Evidence *evidence.Signer
}

// Pages is the recipient web experience (HTML, forms, assets), mounted
// beside the JSON endpoints. The JSON API and the pages share the access
// cookie, so GET /s/{token}/open works from a browser after a form verify.
type Pages interface {
	// Landing renders GET /s/{token} for browsers (requests not asking for JSON).
	Landing(w http.ResponseWriter, r *http.Request) error
	// Register adds the pages' own routes (form posts, assets) to mux.
	Register(mux *http.ServeMux)
}

// Server holds the handlers' dependencies.
type Server struct {
	svc     *link.Service
	signer  *grant.Signer
	log     *slog.Logger
	cfg     Config
	secure  bool // cookies get Secure when the public URL is https
	metrics *Metrics
	hooks   *webhook.Service
}

// New returns the API's handler with every route, /metrics and the probes.
func New(cfg Config, svc *link.Service, hooks *webhook.Service, signer *grant.Signer, reg *prometheus.Registry, ready *obs.Readiness, log *slog.Logger) http.Handler {
	s := &Server{svc: svc, hooks: hooks, signer: signer, log: log, cfg: cfg, secure: strings.HasPrefix(cfg.PublicBaseURL, "https://"),
		metrics: cfg.Metrics}
	if s.metrics == nil {
		s.metrics = NewMetrics(reg)
	}
	mux := http.NewServeMux()

	owner := func(h func(http.ResponseWriter, *http.Request, link.Owner) error) http.Handler {
		return s.ownerOnly(h)
	}
	mux.Handle("POST /v1/links", owner(s.createLinks))
	mux.Handle("GET /v1/links", owner(s.listLinks))
	mux.Handle("GET /v1/links/{id}", owner(s.getLink))
	mux.Handle("DELETE /v1/links/{id}", owner(s.deleteLink))
	mux.Handle("PATCH /v1/links/{id}", owner(s.updateLink))
	mux.Handle("POST /v1/links/revoke", owner(s.revokeLinks))
	mux.Handle("POST /v1/links/{id}/restore", owner(s.restoreLink))
	mux.Handle("POST /v1/links/restore", owner(s.restoreLinks))
	mux.Handle("GET /v1/policy", owner(s.getPolicy))
	mux.Handle("POST /v1/links/send", owner(s.sendLinks))
	mux.Handle("GET /v1/links/{id}/notifications", owner(s.linkNotifications))
	mux.Handle("GET /v1/notifications/{id}", owner(s.getNotification))
	mux.Handle("GET /v1/links/{id}/events", owner(s.linkEvents))
	mux.Handle("GET /v1/events", owner(s.ownerEvents))
	mux.Handle("POST /v1/webhooks", owner(s.createWebhook))
	mux.Handle("GET /v1/webhooks", owner(s.listWebhooks))
	mux.Handle("DELETE /v1/webhooks/{id}", owner(s.deleteWebhook))
	mux.Handle("GET /v1/webhooks/{id}/deliveries", owner(s.webhookDeliveries))

	mux.Handle("GET /s/{token}", s.recipient(s.landing))
	mux.Handle("POST /s/{token}/verify", s.recipient(s.verify))
	mux.Handle("POST /s/{token}/otp", s.recipient(s.requestOTP))
	mux.Handle("GET /s/{token}/targets", s.recipient(s.targets))
	mux.Handle("GET /s/{token}/open", s.recipient(s.open))
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	if cfg.Evidence != nil {
		mux.Handle("GET /v1/links/{id}/audit/export", owner(s.auditExport))
		mux.HandleFunc("GET /.well-known/sharelinks-audit-keys.json", s.auditKeys)
	}

	if cfg.Pages != nil {
		cfg.Pages.Register(mux)
	}
	obs.Handle(mux, reg, ready)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, log, apperr.New(apperr.NotFound, "route_not_found", "no such route: %s %s", r.Method, r.URL.Path))
	})
	h := instrument(mux, s.metrics, log, cfg.RequestTimeout)
	h = withClientIP(h)
	if len(cfg.TrustedProxies) > 0 {
		h = behindProxies(h, cfg.TrustedProxies)
	}
	return h
}

type handlerFunc func(http.ResponseWriter, *http.Request) error

// ownerOnly authenticates the bearer API key and passes the owner on.
func (s *Server) ownerOnly(h func(http.ResponseWriter, *http.Request, link.Owner) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			writeError(w, r, s.log, apperr.New(apperr.Unauthorized, "invalid_api_key", "send the API key as Authorization: Bearer slk_..."))
			return
		}
		o, err := s.svc.Authenticate(r.Context(), strings.TrimSpace(key))
		if err == nil {
			err = h(w, r, o)
		}
		if err != nil {
			writeError(w, r, s.log, err)
		}
	})
}

// recipient wraps public endpoints: the headers every capability-URL page
// needs (no referrer: the token is in the URL; no caching; no framing).
func (s *Server) recipient(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Cache-Control", "no-store")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' https:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		if err := h(w, r); err != nil {
			writeError(w, r, s.log, err)
		}
	})
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.signer.JWKS())
}
