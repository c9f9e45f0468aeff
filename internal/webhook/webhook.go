// Package webhook delivers owners' subscribed events as signed HTTP POSTs:
// a consumer of the event stream records one delivery per subscribed
// webhook in Postgres, and a dispatcher sends due deliveries with retries
// and backoff for up to a day. Destinations on private networks are
// refused (unless allowed) both when a webhook is created and when each
// connection is made, so DNS tricks cannot reach internal services.
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
)

// SignatureHeader carries "t=UNIX,v1=HEX", HEX being HMAC-SHA256 over "UNIX.BODY".
const SignatureHeader = "Sharelinks-Signature"

// Subscribable are the event types owners may subscribe to.
var Subscribable = map[string]bool{
	events.LinkCreated: true, events.LinkVerified: true, events.LinkOpened: true, events.LinkExhausted: true,
	events.LinkExpired: true, events.LinkRevoked: true, events.LinkUpdated: true, events.LinkVerifyFailed: true, events.LinkPurged: true,
	events.LinkRestored:     true,
	events.NotificationSent: true, events.NotificationFailed: true, events.OTPSent: true, events.OTPFailed: true,
}

// Sign returns the signature header value for body at time t.
func Sign(secretKey []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secretKey)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Store is what the webhook service and dispatcher need.
type Store interface {
	CreateWebhook(ctx context.Context, w postgres.Webhook) (postgres.Webhook, error)
	ListWebhooks(ctx context.Context, ownerID string) ([]postgres.Webhook, error)
	DeleteWebhook(ctx context.Context, ownerID, id string) error
	ListDeliveries(ctx context.Context, ownerID, webhookID string, limit int) ([]postgres.Delivery, error)
	ClaimDueDeliveries(ctx context.Context, batch int, lease time.Duration) ([]postgres.Delivery, error)
	DeliveryOutcome(ctx context.Context, id, status string, code *int, lastErr *string, next time.Time) error
}

// Guard decides which destination addresses are allowed.
type Guard struct{ AllowPrivate bool }

// Ranges the netip predicates do not cover.
var (
	carrierNAT   = netip.MustParsePrefix("100.64.0.0/10")
	ietfProtocol = netip.MustParsePrefix("192.0.0.0/24")
)

// Allowed reports whether ip may be contacted.
func (g Guard) Allowed(ip netip.Addr) bool {
	if g.AllowPrivate {
		return true
	}
	ip = ip.Unmap()
	return !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() ||
		carrierNAT.Contains(ip) || ietfProtocol.Contains(ip))
}

// Validate checks a webhook URL: absolute http(s), and a host that
// resolves only to allowed addresses.
func (g Guard) Validate(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || len(raw) > 2048 {
		return apperr.Field("url", "invalid_url", "url must be an absolute http(s) URL without credentials")
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return apperr.Field("url", "invalid_url", "cannot resolve %s", host)
		}
		addrs = ips
	}
	for _, ip := range addrs {
		if !g.Allowed(ip) {
			return apperr.Field("url", "private_url", "url resolves to a private or loopback address (%s); set WEBHOOK_ALLOW_PRIVATE=true to allow", ip)
		}
	}
	return nil
}

// Client returns an HTTP client that refuses disallowed addresses at
// connect time (after DNS), so a name that later resolves elsewhere is
// still caught.
func (g Guard) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		if !g.Allowed(ap.Addr()) {
			return fmt.Errorf("webhook destination %s is a private address", ap.Addr())
		}
		return nil
	}}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: timeout}
	return &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Service is the owner-facing part: create, list, delete, deliveries.
type Service struct {
	store Store
	keys  *secret.Keys
	guard Guard
}

// NewService builds the service.
func NewService(store Store, keys *secret.Keys, g Guard) *Service {
	return &Service{store: store, keys: keys, guard: g}
}

// Created is a new webhook with its secret, shown only now.
type Created struct {
	postgres.Webhook
	Secret string
}

// Create validates and stores a webhook; the secret is generated when empty.
func (s *Service) Create(ctx context.Context, ownerID, rawURL string, types []string, sec string) (Created, error) {
	if err := s.guard.Validate(ctx, rawURL); err != nil {
		return Created{}, err
	}
	if len(types) == 0 || len(types) > len(Subscribable) {
		return Created{}, apperr.Field("events", "invalid_events", "subscribe to at least one event type")
	}
	seen := map[string]bool{}
	for i, t := range types {
		if !Subscribable[t] {
			return Created{}, apperr.Field(fmt.Sprintf("events[%d]", i), "invalid_events", "unknown event type %q", t)
		}
		seen[t] = true
	}
	uniq := make([]string, 0, len(seen))
	for _, t := range types {
		if seen[t] {
			uniq = append(uniq, t)
			delete(seen, t)
		}
	}
	if sec == "" {
		sec = secret.NewToken("whsec_")
	} else if len(sec) < 16 || len(sec) > 200 {
		return Created{}, apperr.Field("secret", "invalid_secret", "secret must be 16 to 200 characters")
	}
	id := uuid.Must(uuid.NewV7()).String()
	w, err := s.store.CreateWebhook(ctx, postgres.Webhook{ID: id, OwnerID: ownerID, URL: rawURL, Events: uniq,
		SecretSealed: s.keys.Seal([]byte(sec), []byte(id))})
	if err != nil {
		return Created{}, err
	}
	return Created{Webhook: w, Secret: sec}, nil
}

// List returns the owner's webhooks.
func (s *Service) List(ctx context.Context, ownerID string) ([]postgres.Webhook, error) {
	return s.store.ListWebhooks(ctx, ownerID)
}

// Delete removes one of the owner's webhooks.
func (s *Service) Delete(ctx context.Context, ownerID, id string) error {
	return s.store.DeleteWebhook(ctx, ownerID, id)
}

// Deliveries lists one webhook's latest deliveries.
func (s *Service) Deliveries(ctx context.Context, ownerID, id string) ([]postgres.Delivery, error) {
	return s.store.ListDeliveries(ctx, ownerID, id, 100)
}

// deliveryResults maps a delivery attempt's outcome to its
// sharelinks_webhook_deliveries_total result.
var deliveryResults = map[string]string{"delivered": "ok", "retry": "retry", "failed": "failed"}

// Metrics count delivery attempts.
type Metrics struct{ Deliveries *prometheus.CounterVec }

// NewMetrics registers sharelinks_webhook_deliveries_total.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharelinks_webhook_deliveries_total", Help: "Webhook delivery attempts by result.",
	}, []string{"result"})}
	for _, r := range deliveryResults { // zeros, so an alert sees the first failure
		m.Deliveries.WithLabelValues(r)
	}
	reg.MustRegister(m.Deliveries)
	return m
}

// DispatcherConfig tunes retries.
type DispatcherConfig struct {
	Base        time.Duration // first retry delay, doubling; default 10s
	Max         time.Duration // longest delay; default 1h
	GiveUpAfter time.Duration // since the event; default 24h
	Timeout     time.Duration // per POST; default 10s
	Poll        time.Duration // default 1s
	Batch       int           // default 50
	Concurrency int           // default 8
}

// Dispatcher sends due deliveries.
type Dispatcher struct {
	store   Store
	keys    *secret.Keys
	client  *http.Client
	cfg     DispatcherConfig
	log     *slog.Logger
	metrics *Metrics
}

// NewDispatcher builds a dispatcher.
func NewDispatcher(store Store, keys *secret.Keys, g Guard, cfg DispatcherConfig, log *slog.Logger, m *Metrics) *Dispatcher {
	cfg.Base = cmp.Or(cfg.Base, 10*time.Second)
	cfg.Max = cmp.Or(cfg.Max, time.Hour)
	cfg.GiveUpAfter = cmp.Or(cfg.GiveUpAfter, 24*time.Hour)
	cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	cfg.Poll = cmp.Or(cfg.Poll, time.Second)
	cfg.Batch = cmp.Or(cfg.Batch, 50)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 8)
	return &Dispatcher{store: store, keys: keys, client: g.Client(cfg.Timeout), cfg: cfg, log: log, metrics: m}
}

// Run sends due deliveries until ctx ends. Deliveries are written by the
// statements that write their events, in any api or worker process, so
// the dispatcher finds them by polling (Poll, 1 s by default).
func (d *Dispatcher) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for ctx.Err() == nil {
			batch, err := d.store.ClaimDueDeliveries(ctx, d.cfg.Batch, d.cfg.Timeout+30*time.Second)
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("claim webhook deliveries", "err", err)
				}
				break
			}
			d.sendAll(batch)
			if len(batch) < d.cfg.Batch {
				break
			}
		}
	}
}

func (d *Dispatcher) sendAll(batch []postgres.Delivery) {
	sem := make(chan struct{}, d.cfg.Concurrency)
	done := make(chan struct{})
	for _, dl := range batch {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; done <- struct{}{} }()
			d.send(dl)
		}()
	}
	for range batch {
		<-done
	}
}

// send makes one attempt; it uses its own context so a shutdown does not
// cut a POST in half (the lease covers a crash).
func (d *Dispatcher) send(dl postgres.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout+5*time.Second)
	defer cancel()
	sec, err := d.keys.Open(dl.SecretSealed, []byte(dl.WebhookID))
	if err != nil {
		d.outcome(dl, "failed", nil, "cannot unseal webhook secret: "+err.Error())
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dl.URL, bytes.NewReader(dl.Payload))
	if err != nil {
		d.outcome(dl, "failed", nil, "bad url: "+err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sharelinks-webhooks/1")
	req.Header.Set("Sharelinks-Delivery-Id", dl.ID)
	req.Header.Set("Sharelinks-Event-Id", dl.EventID)
	req.Header.Set("Sharelinks-Event-Type", dl.EventType)
	req.Header.Set(SignatureHeader, Sign(sec, time.Now(), dl.Payload))
	resp, err := d.client.Do(req)
	if err != nil {
		d.outcome(dl, "retry", nil, err.Error())
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		d.outcome(dl, "delivered", &code, "")
		return
	}
	d.outcome(dl, "retry", &code, "HTTP "+strconv.Itoa(code))
}

// record writes a delivery's outcome. While the database is away it
// keeps trying, for a while inside the claim's lease (the POST took at
// most Timeout+5s of its Timeout+30s): a POST the receiver accepted is
// then recorded when the database is back, not sent again when the
// lease runs out.
func (d *Dispatcher) record(id, status string, code *int, lastErr *string, next time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for round := 0; ; round++ {
		err := d.store.DeliveryOutcome(ctx, id, status, code, lastErr, next)
		if err == nil || !postgres.Unavailable(err) {
			return err
		}
		t := time.NewTimer(min(100*time.Millisecond<<min(round, 3), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (d *Dispatcher) outcome(dl postgres.Delivery, result string, code *int, msg string) {
	status, next := result, time.Now()
	if result == "retry" {
		delay := d.cfg.Base
		for i := 1; i < dl.Attempts && delay < d.cfg.Max; i++ {
			delay *= 2
		}
		next = time.Now().Add(min(delay, d.cfg.Max))
		status = "pending"
		if next.After(dl.CreatedAt.Add(d.cfg.GiveUpAfter)) {
			status, result = "failed", "failed"
		}
	}
	var lastErr *string
	if msg != "" {
		lastErr = &msg
	}
	if err := d.record(dl.ID, status, code, lastErr, next); err != nil {
		d.log.Warn("record webhook outcome; the lease expiry retries it", "delivery_id", dl.ID, "err", err)
	}
	d.metrics.Deliveries.WithLabelValues(deliveryResults[result]).Inc()
	if result != "delivered" {
		d.log.Info("webhook delivery not accepted", "delivery_id", dl.ID, "attempts", dl.Attempts, "status", status, "err", msg)
	}
}
