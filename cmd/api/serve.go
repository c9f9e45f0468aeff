package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/config"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/grant"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/obs"
	"github.com/sharelinks/sharelinks/internal/password"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/web"
	"github.com/sharelinks/sharelinks/internal/webhook"
)

// defaultMemLimit is the api's soft memory limit when GOMEMLIMIT is unset.
const defaultMemLimit = 64 << 20

type serveConfig struct {
	config.Common
	HTTPAddr            string
	PublicBaseURL       string
	MaxExpiry           time.Duration
	DefaultExpiry       time.Duration
	MaxAccessCount      int
	ForbidOpenLinks     bool
	PhoneRegion         string
	SMSRegions          string
	NotifyPerHour       int
	RemindBefore        time.Duration
	RestoreWindow       time.Duration
	GrantTTL            time.Duration
	OTP                 link.OTPLimits
	PasswordAttempts    int
	PasswordLockout     time.Duration
	SessionTTL          time.Duration
	DBMaxConns          int
	ShutdownTimeout     time.Duration
	RequestTimeout      time.Duration
	TrustedProxies      string
	WebhookAllowPrivate bool
	HashConcurrency     int
	KeyCacheTTL         time.Duration
	BrandName           string
	BrandLogo           string
	BrandAccent         string
}

func serve(ctx context.Context, args []string) error {
	var c serveConfig
	set := config.New("api serve")
	set.BindCommon(&c.Common, true, true)
	set.String(&c.HTTPAddr, "HTTP_ADDR", ":8080", "address the API listens on (also /metrics, /healthz, /readyz)")
	set.String(&c.PublicBaseURL, "PUBLIC_BASE_URL", "", "what link URLs start with, e.g. https://share.example.com (default http://localhost:PORT)")
	set.Duration(&c.MaxExpiry, "MAX_EXPIRY", 365*24*time.Hour, "how far ahead expires_at may be")
	set.Duration(&c.DefaultExpiry, "DEFAULT_EXPIRY", 0, "how far ahead a link sent without expires_at expires (0: expires_at is required)")
	set.Int(&c.MaxAccessCount, "MAX_ACCESS_COUNT", 0,
		"the most accesses any link may allow: links without a limit get it, higher ones are refused (0: no such rule)")
	set.Bool(&c.ForbidOpenLinks, "FORBID_OPEN_LINKS", false, "refuse links without an authenticator")
	set.String(&c.PhoneRegion, "DEFAULT_PHONE_REGION", "", "region for phone numbers given without +, e.g. US (empty: E.164 required)")
	set.String(&c.SMSRegions, "SMS_REGIONS", "", "regions whose numbers may be texted, e.g. US,CA,GB (empty: any)")
	set.Int(&c.NotifyPerHour, "NOTIFY_PER_HOUR", 10_000, "notifications one owner may queue per hour (0: no limit)")
	set.Duration(&c.RemindBefore, "REMIND_BEFORE", 24*time.Hour,
		"remind a recipient sent a link this long before it expires if it is still unopened (0: never)")
	d := link.DefaultOTPLimits
	set.Int(&c.OTP.CodeLength, "OTP_CODE_LENGTH", d.CodeLength, "digits in a one-time code (6-10), unless a link's otp_policy says otherwise")
	set.Duration(&c.OTP.TTL, "OTP_TTL", d.TTL, "how long a one-time code works (1m-10m), unless a link's otp_policy says otherwise")
	set.Int(&c.OTP.MaxWrongCodes, "OTP_MAX_ATTEMPTS", d.MaxWrongCodes, "wrong codes before a code locks (1-10), unless a link's otp_policy says otherwise")
	set.Duration(&c.OTP.MinGap, "OTP_RESEND_AFTER", d.MinGap, "wait between two codes for a link (10s-10m), unless a link's otp_policy says otherwise")
	set.Int(&c.OTP.PerLinkHour, "OTP_PER_LINK_HOUR", d.PerLinkHour, "codes one link may be sent in any hour")
	set.Int(&c.OTP.PerDestinationHour, "OTP_PER_DESTINATION_HOUR", d.PerDestinationHour,
		"codes one address or number may be sent in any hour, across links")
	set.Duration(&c.RestoreWindow, "RESTORE_WINDOW", 7*24*time.Hour,
		"how long after a revocation the owner may restore the link under the same URL (0: revocations are final)")
	set.Int(&c.PasswordAttempts, "PASSWORD_MAX_ATTEMPTS", 5, "wrong passwords before a link's verification locks (1-20)")
	set.Duration(&c.PasswordLockout, "PASSWORD_LOCKOUT", 15*time.Minute, "how long a link's verification stays locked (1m-24h)")
	set.Duration(&c.GrantTTL, "GRANT_TTL", 60*time.Second, "lifetime of a signed grant")
	set.Duration(&c.SessionTTL, "ACCESS_TTL", 30*time.Minute, "lifetime of a recipient's access token")
	set.Int(&c.DBMaxConns, "DB_MAX_CONNS", 16, "Postgres pool size")
	set.Duration(&c.ShutdownTimeout, "SHUTDOWN_TIMEOUT", 15*time.Second, "how long in-flight requests get at shutdown")
	set.Duration(&c.RequestTimeout, "REQUEST_TIMEOUT", 10*time.Second, "longest a request may work; past it the answer is 503 (0: no bound)")
	set.String(&c.TrustedProxies, "TRUSTED_PROXIES", "", "addresses or CIDRs of proxies in front of the api whose X-Forwarded-For names the client")
	set.Duration(&c.KeyCacheTTL, "API_KEY_CACHE_TTL", time.Minute,
		"how long an API key lookup is remembered (0 disables; revocations are seen at once either way, via LISTEN)")
	set.Int(&c.HashConcurrency, "PASSWORD_HASH_CONCURRENCY", max(1, runtime.NumCPU()/2),
		"Argon2id hashes at once (each holds 19 MiB): bounds memory under password load")
	set.String(&c.BrandName, "BRAND_NAME", "sharelinks", "name shown on recipient pages")
	set.String(&c.BrandLogo, "BRAND_LOGO_URL", "", "https URL of a logo for recipient pages")
	set.String(&c.BrandAccent, "BRAND_ACCENT", "#2563eb", "accent colour (#rrggbb)")
	set.Bool(&c.WebhookAllowPrivate, "WEBHOOK_ALLOW_PRIVATE", false, "allow webhook URLs on loopback/private networks")
	if err := set.Parse(args); err != nil {
		return err
	}
	if c.DefaultExpiry < 0 || c.DefaultExpiry > c.MaxExpiry {
		return fmt.Errorf("DEFAULT_EXPIRY: %s is not within MAX_EXPIRY (%s)", c.DefaultExpiry, c.MaxExpiry)
	}
	if c.MaxAccessCount < 0 {
		return fmt.Errorf("MAX_ACCESS_COUNT: %d; use 0 for no rule", c.MaxAccessCount)
	}
	if c.PasswordAttempts < 1 || c.PasswordAttempts > 20 {
		return fmt.Errorf("PASSWORD_MAX_ATTEMPTS: %d: must be 1 to 20", c.PasswordAttempts)
	}
	if c.PasswordLockout < time.Minute || c.PasswordLockout > 24*time.Hour {
		return fmt.Errorf("PASSWORD_LOCKOUT: %s: must be 1m to 24h", c.PasswordLockout)
	}
	if err := c.OTP.Check(); err != nil {
		return fmt.Errorf("OTP_*: %w", err)
	}
	smsRegions, err := link.ParseRegions(c.SMSRegions)
	if err != nil {
		return fmt.Errorf("SMS_REGIONS: %w", err)
	}
	proxies, err := httpapi.ParseProxies(c.TrustedProxies)
	if err != nil {
		return fmt.Errorf("TRUSTED_PROXIES: %w", err)
	}
	log := obs.NewLogger(os.Stderr, c.LogFormat, c.LogLevel)
	if os.Getenv("GOMEMLIMIT") == "" {
		// Each password hash allocates Argon2id's 19 MiB and drops it; without a
		// soft limit the heap target doubles past that garbage and RSS climbs
		// with load. Set GOMEMLIMIT to override.
		debug.SetMemoryLimit(defaultMemLimit)
	}

	lis, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR: listen on %s: %w", c.HTTPAddr, err)
	}
	defer lis.Close()
	if c.PublicBaseURL == "" {
		_, port, _ := net.SplitHostPort(lis.Addr().String())
		c.PublicBaseURL = "http://localhost:" + port
	}

	pool, err := postgres.Open(ctx, c.DatabaseURL, int32(c.DBMaxConns))
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	nc, err := events.Connect(c.NATSURL, "sharelinks-api", log)
	if err != nil {
		return fmt.Errorf("NATS_URL: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("NATS_URL: jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = events.EnsureStreams(sctx, js, events.StreamOptions{Replicas: c.StreamReplicas})
	cancel()
	if err != nil {
		return fmt.Errorf("NATS_URL: %w", err)
	}

	reg := obs.NewRegistry(version)
	relay := events.NewRelay(pool, js, log, events.NewRelayMetrics(reg))
	// The api's relay is woken by every request's commit: one loop
	// gathers more rows per claim than two taking turns. Measured with
	// make bench, alternating (BENCHMARKS.md, session 5): verify / open
	// across a million links 0.40 / 0.43 and 0.38 / 0.42 of the bare UPDATE
	// with one loop, 0.33 / 0.38 and 0.32 / 0.37 with two. The workers'
	// relays keep two loops for the reaper's bursts.
	relay.Parallel = 1
	store := postgres.NewStore(pool, relay.Wake)
	store.InstrumentGroupCommit(reg)
	signer, err := grant.NewSigner(c.Keys.GrantKey(), strings.TrimRight(c.PublicBaseURL, "/"), c.GrantTTL)
	if err != nil {
		return err
	}
	// Owner requests find their API key in memory; revocations reach every
	// process through Postgres NOTIFY (see postgres.CachedKeys).
	var linkStore link.Store = store
	keyed := postgres.WithKeyCache(store, log, c.KeyCacheTTL)
	if c.KeyCacheTTL > 0 {
		linkStore = keyed
	}
	svc := link.NewService(linkStore, c.Keys, password.NewHasher(password.Default, c.HashConcurrency), signer, link.Config{
		PublicBaseURL: c.PublicBaseURL,
		Policy: link.Policy{MaxExpiry: c.MaxExpiry, DefaultExpiry: c.DefaultExpiry, MaxAccessCount: c.MaxAccessCount,
			ForbidOpenLinks: c.ForbidOpenLinks, DefaultPhoneZone: c.PhoneRegion, SMSRegions: smsRegions},
		SessionTTL: c.SessionTTL, NotifyPerHour: c.NotifyPerHour, RemindBefore: c.RemindBefore, OTP: c.OTP,
		VerifyLimit: c.PasswordAttempts, LockFor: c.PasswordLockout,
		RestoreWindow: c.RestoreWindow,
	})
	auditSigner, err := evidence.NewSigner(c.Keys.AuditKey(), strings.TrimRight(c.PublicBaseURL, "/"))
	if err != nil {
		return err
	}
	ready := obs.NewReadiness()
	ready.Add("postgres", func(ctx context.Context) error { return pool.Ping(ctx) })
	ready.Add("nats", func(context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats %s", s)
		}
		return nil
	})
	hooks := webhook.NewService(store, c.Keys, webhook.Guard{AllowPrivate: c.WebhookAllowPrivate})
	metrics := httpapi.NewMetrics(reg)
	webCfg := web.Config{PublicBaseURL: c.PublicBaseURL, Log: log, Observer: metrics,
		Brand: compose.Brand{Name: c.BrandName, LogoURL: c.BrandLogo, AccentColor: c.BrandAccent}}
	if err := webCfg.Validate(); err != nil {
		return fmt.Errorf("BRAND_*: %w", err)
	}
	handler := httpapi.New(httpapi.Config{PublicBaseURL: c.PublicBaseURL, Pages: web.New(svc, webCfg), Metrics: metrics,
		RequestTimeout: c.RequestTimeout, TrustedProxies: proxies, Evidence: auditSigner},
		svc, hooks, signer, reg, ready, log)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	g := new(errgroup.Group)
	g.Go(func() error { return relay.Run(relayCtx) })
	if c.KeyCacheTTL > 0 {
		g.Go(func() error { return keyed.Run(relayCtx) })
	}
	g.Go(func() error {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	log.Info("api listening", "addr", lis.Addr().String(), "public_base_url", c.PublicBaseURL, "version", version)

	<-ctx.Done()
	log.Info("shutting down: finishing in-flight requests")
	shCtx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shCtx); err != nil {
		log.Warn("in-flight requests cut at shutdown timeout", "err", err)
	}
	// The relay flushes what the last requests committed before it stops.
	stopRelay()
	err = g.Wait()
	if derr := nc.Drain(); derr != nil {
		log.Warn("nats drain", "err", derr)
	}
	return err
}
