// Package delivery is the notifier's work: it turns notification.requested
// and otp.requested events into emails and SMS, records every outcome in
// Postgres, and decides retry or failure in one place per message kind.
package delivery

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/mail"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
)

// MailSender sends one email.
type MailSender interface {
	Send(ctx context.Context, m mail.Message) (string, error)
}

// SMSSender sends one SMS.
type SMSSender interface {
	Send(ctx context.Context, to, body string) (string, error)
}

// Store is the persistence the workers need.
type Store interface {
	ClaimNotification(ctx context.Context, id string, lease time.Duration) (postgres.Job, bool, error)
	NotificationSent(ctx context.Context, n link.Notification, providerID string) error
	NotificationRetry(ctx context.Context, id, lastErr string, delay time.Duration) error
	NotificationFailed(ctx context.Context, id, lastErr string) error
	ClaimChallenge(ctx context.Context, id string, lease time.Duration, codeHash func(tokenHash []byte, length int) []byte) (postgres.CodeJob, bool, error)
	ChallengeSent(ctx context.Context, j postgres.CodeJob, providerID string) error
	ChallengeRetry(ctx context.Context, id, lastErr string) error
	ChallengeFailed(ctx context.Context, id, lastErr string) error
}

// Retry is a retry schedule: Base doubling up to Max, at most Attempts sends.
type Retry struct {
	Base     time.Duration
	Max      time.Duration
	Attempts int
}

// Delay is the wait after the n-th failed attempt (n ≥ 1).
func (r Retry) Delay(n int) time.Duration {
	d := r.Base
	for i := 1; i < n && d < r.Max; i++ {
		d *= 2
	}
	return min(d, r.Max)
}

// Config configures the workers.
type Config struct {
	PublicBaseURL string
	Brand         compose.Brand
	Notify        Retry         // default 30s doubling to 1h, 10 attempts
	OTP           Retry         // default 2s doubling to 10s, 3 attempts: codes are short-lived
	Lease         time.Duration // how long one send attempt holds a row
	// SMSRegions are the regions texts may go to (as the api's
	// SMS_REGIONS; empty: any). The api checks them when a link or send
	// is made; checked again here, a list tightened after an SMS-pumping
	// incident also stops the texts and codes already queued.
	SMSRegions []string
}

// Metrics are the senders' metrics.
type Metrics struct {
	SendDuration  *prometheus.HistogramVec
	Notifications *prometheus.CounterVec
}

// NewMetrics registers the delivery metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sharelinks_send_duration_seconds", Help: "Time to hand a message to the provider, by channel and result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"channel", "result"}),
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sharelinks_notifications_total", Help: "Notifications and codes finished, by channel and status.",
		}, []string{"channel", "status"}),
	}
	for _, ch := range []string{"email", "sms"} { // export zeros for alert ratios
		for _, st := range []string{"sent", "failed"} {
			m.Notifications.WithLabelValues(ch, st)
		}
	}
	reg.MustRegister(m.SendDuration, m.Notifications)
	return m
}

// Classifier tells whether a provider error may succeed on retry.
type Classifier func(error) bool

// Workers hold the handlers for the notifier's consumers.
type Workers struct {
	store    Store
	keys     *secret.Keys
	mail     MailSender
	sms      SMSSender
	mailTemp Classifier
	smsTemp  Classifier
	cfg      Config
	host     string
	log      *slog.Logger
	metrics  *Metrics
	// unrecorded holds, by notification or challenge id, the record of
	// a send the provider accepted that could not be written (the
	// database was away). The consumer holds such an event and runs its
	// handler again; that run writes the record instead of sending a
	// second message, which for a code would be a second code that
	// makes the first one useless.
	unrecorded sync.Map // id → func(context.Context) error
}

// recordPending writes the record of an earlier accepted send of id, if
// this process holds one; done reports whether there was one.
func (w *Workers) recordPending(ctx context.Context, id string) (done bool, err error) {
	rec, ok := w.unrecorded.Load(id)
	if !ok {
		return false, nil
	}
	if err := rec.(func(context.Context) error)(ctx); err != nil {
		return true, err
	}
	w.unrecorded.Delete(id)
	w.log.Info("recorded a send accepted while the database was away", "id", id)
	return true, nil
}

// record writes the outcome of an accepted send; when it cannot, it keeps
// it for the next run of the same event (see unrecorded).
func (w *Workers) record(ctx context.Context, id string, rec func(context.Context) error) error {
	if err := rec(ctx); err != nil {
		w.unrecorded.Store(id, rec)
		return err
	}
	return nil
}

// New builds the workers.
func New(store Store, keys *secret.Keys, m MailSender, mailTemp Classifier, s SMSSender, smsTemp Classifier,
	cfg Config, log *slog.Logger, metrics *Metrics) *Workers {
	if cfg.Notify == (Retry{}) {
		cfg.Notify = Retry{Base: 30 * time.Second, Max: time.Hour, Attempts: 10}
	}
	if cfg.OTP == (Retry{}) {
		cfg.OTP = Retry{Base: 2 * time.Second, Max: 10 * time.Second, Attempts: 3}
	}
	if cfg.Lease == 0 {
		cfg.Lease = 2 * time.Minute
	}
	host := "localhost"
	if u, err := url.Parse(cfg.PublicBaseURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	return &Workers{store: store, keys: keys, mail: m, sms: s, mailTemp: mailTemp, smsTemp: smsTemp,
		cfg: cfg, host: host, log: log, metrics: metrics}
}

// send runs one provider call and classifies its error.
func (w *Workers) send(channel string, fn func() (string, error)) (id string, temporary bool, err error) {
	start := time.Now()
	id, err = fn()
	result := "ok"
	if err != nil {
		temporary = w.mailTemp(err)
		if channel == "sms" {
			temporary = w.smsTemp(err)
		}
		result = "permanent"
		if temporary {
			result = "temporary"
		}
	}
	w.metrics.SendDuration.WithLabelValues(channel, result).Observe(time.Since(start).Seconds())
	return id, temporary, err
}

// notClaimable turns a lease held by another worker into a retry after it.
func notClaimable(err error) error {
	var nc *postgres.ErrNotClaimable
	if errors.As(err, &nc) {
		return events.Retry(max(time.Until(nc.Until), time.Second), err)
	}
	return err
}

// untextable is why a text to phone may not be sent under SMSRegions (it
// names the number's region, never the number), or "" when it may.
func (w *Workers) untextable(phone string) string {
	if err := (link.Policy{SMSRegions: w.cfg.SMSRegions}).SMSAllowed(phone); err != nil {
		return "not sent: " + err.Error()
	}
	return ""
}

// HandleNotification sends one "Open" notification. A duplicate event for
// a notification already sent or failed sends nothing.
func (w *Workers) HandleNotification(ctx context.Context, e events.Event, _ uint64) error {
	var d events.NotificationData
	if err := unmarshal(e, &d); err != nil {
		return events.Permanent(err)
	}
	if done, err := w.recordPending(ctx, d.NotificationID); done {
		return err
	}
	job, ok, err := w.store.ClaimNotification(ctx, d.NotificationID, w.cfg.Lease)
	if err != nil || !ok {
		return notClaimable(err)
	}
	n, l := job.Notification, job.Link
	log := w.log.With("notification_id", n.ID, "channel", n.Channel)
	if st := link.EffectiveStatus(l.Status, l.ExpiresAt, time.Now()); st != link.StatusActive {
		return w.failNotification(ctx, n, "link is "+st+": not sent")
	}
	if n.Channel == "sms" {
		if reason := w.untextable(n.Recipient); reason != "" {
			return w.failNotification(ctx, n, reason)
		}
	}
	reminder := n.Kind == link.KindReminder
	if reminder && l.AccessCount > 0 {
		return w.failNotification(ctx, n, "link was opened since the reminder was queued: not sent")
	}
	tok, err := w.keys.Open(l.TokenSealed, []byte(l.ID))
	if err != nil {
		return events.Permanent(fmt.Errorf("unseal link token (was SHARELINKS_SECRET changed?): %w", err))
	}
	data := compose.NotificationData{
		SenderName: job.OwnerName, Title: l.Title, Message: l.Message,
		URL: w.cfg.PublicBaseURL + "/s/" + string(tok), ExpiresAt: l.ExpiresAt, AuthType: l.AuthType, Brand: w.cfg.Brand,
		Reminder: reminder,
	}
	if l.NotBefore != nil {
		data.OpensAt = *l.NotBefore
	}
	if n.Message != "" {
		data.Message = n.Message
	}
	var providerID string
	var temporary bool
	if n.Channel == "sms" {
		body := compose.NotificationSMS(data)
		providerID, temporary, err = w.send("sms", func() (string, error) { return w.sms.Send(ctx, n.Recipient, body) })
	} else {
		subject, text, html, cerr := compose.Notification(data)
		if cerr != nil {
			return w.failNotification(ctx, n, "compose: "+cerr.Error())
		}
		msg := mail.Message{To: n.Recipient, Subject: subject, Text: text, HTML: html,
			MessageID: fmt.Sprintf("<notification-%s@%s>", n.ID, w.host)}
		providerID, temporary, err = w.send("email", func() (string, error) { return w.mail.Send(ctx, msg) })
	}
	if err == nil {
		err := w.record(ctx, n.ID, func(ctx context.Context) error { return w.store.NotificationSent(ctx, n, providerID) })
		if err != nil {
			// Sent but not recorded. A run of this event in this process
			// records it; only another process's (after a crash) sends
			// again: the at-least-once window.
			return fmt.Errorf("record sent notification: %w", err)
		}
		w.metrics.Notifications.WithLabelValues(n.Channel, "sent").Inc()
		log.Info("notification sent", "attempts", n.Attempts)
		return nil
	}
	if !temporary || n.Attempts >= w.cfg.Notify.Attempts {
		return w.failNotification(ctx, n, err.Error())
	}
	delay := w.cfg.Notify.Delay(n.Attempts)
	if rerr := w.store.NotificationRetry(ctx, n.ID, err.Error(), delay); rerr != nil {
		return rerr
	}
	log.Warn("notification send failed; will retry", "attempts", n.Attempts, "delay", delay, "err", err)
	return events.Retry(delay, err)
}

func (w *Workers) failNotification(ctx context.Context, n link.Notification, reason string) error {
	if err := w.store.NotificationFailed(ctx, n.ID, reason); err != nil {
		return err
	}
	w.metrics.Notifications.WithLabelValues(n.Channel, "failed").Inc()
	w.log.Warn("notification failed", "notification_id", n.ID, "channel", n.Channel, "attempts", n.Attempts, "reason", reason)
	return nil
}

// DeadNotification marks the notification of a dead-lettered event failed.
func (w *Workers) DeadNotification(ctx context.Context, e events.Event, reason string) error {
	var d events.NotificationData
	if unmarshal(e, &d) != nil || d.NotificationID == "" {
		return nil
	}
	return w.store.NotificationFailed(ctx, d.NotificationID, "gave up: "+reason)
}

// NewCode returns a uniformly random code of length digits from
// crypto/rand (leading zeros kept: every digit carries its share).
func NewCode(length int) string {
	n, err := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(length)), nil))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return fmt.Sprintf("%0*d", length, n)
}

// HandleOTP generates a code, stores only its keyed hash, and sends it.
func (w *Workers) HandleOTP(ctx context.Context, e events.Event, _ uint64) error {
	var d events.OTPData
	if err := unmarshal(e, &d); err != nil {
		return events.Permanent(err)
	}
	if done, err := w.recordPending(ctx, d.ChallengeID); done {
		return err
	}
	var code string
	job, ok, err := w.store.ClaimChallenge(ctx, d.ChallengeID, w.cfg.Lease, func(th []byte, length int) []byte {
		code = NewCode(length)
		return w.keys.CodeHash(th, code)
	})
	if err != nil || !ok {
		return notClaimable(err)
	}
	ch := job.Challenge
	// The message says how long the code has left: the link's policy set
	// its lifetime, and a retried send has less of it.
	ttl := max(time.Until(ch.ExpiresAt), time.Second)
	log := w.log.With("challenge_id", ch.ID, "channel", ch.Channel)
	var providerID string
	var temporary bool
	if ch.Channel == "sms" {
		if reason := w.untextable(ch.Recipient); reason != "" {
			return w.failOTP(ctx, ch, reason)
		}
		body := compose.OTPSMS(code, w.host, ttl, w.cfg.Brand.Name)
		providerID, temporary, err = w.send("sms", func() (string, error) { return w.sms.Send(ctx, ch.Recipient, body) })
	} else {
		subject, text, html, cerr := compose.OTPEmail(compose.OTPData{Code: code, TTL: ttl, Host: w.host, Brand: w.cfg.Brand})
		if cerr != nil {
			return w.failOTP(ctx, ch, "compose: "+cerr.Error())
		}
		msg := mail.Message{To: ch.Recipient, Subject: subject, Text: text, HTML: html,
			MessageID: fmt.Sprintf("<otp-%s-%d@%s>", ch.ID, job.Attempts, w.host)}
		providerID, temporary, err = w.send("email", func() (string, error) { return w.mail.Send(ctx, msg) })
	}
	if err == nil {
		if err := w.record(ctx, ch.ID, func(ctx context.Context) error { return w.store.ChallengeSent(ctx, job, providerID) }); err != nil {
			return fmt.Errorf("record sent code: %w", err)
		}
		w.metrics.Notifications.WithLabelValues(ch.Channel, "sent").Inc()
		log.Info("code sent", "attempts", job.Attempts)
		return nil
	}
	if !temporary || job.Attempts >= w.cfg.OTP.Attempts {
		return w.failOTP(ctx, ch, err.Error())
	}
	if rerr := w.store.ChallengeRetry(ctx, ch.ID, err.Error()); rerr != nil {
		return rerr
	}
	delay := w.cfg.OTP.Delay(job.Attempts)
	log.Warn("code send failed; will retry", "attempts", job.Attempts, "delay", delay, "err", err)
	return events.Retry(delay, err)
}

func (w *Workers) failOTP(ctx context.Context, ch link.Challenge, reason string) error {
	if err := w.store.ChallengeFailed(ctx, ch.ID, reason); err != nil {
		return err
	}
	w.metrics.Notifications.WithLabelValues(ch.Channel, "failed").Inc()
	w.log.Warn("code send failed for good", "challenge_id", ch.ID, "channel", ch.Channel, "reason", reason)
	return nil
}

// DeadOTP marks the challenge of a dead-lettered event failed.
func (w *Workers) DeadOTP(ctx context.Context, e events.Event, reason string) error {
	var d events.OTPData
	if unmarshal(e, &d) != nil || d.ChallengeID == "" {
		return nil
	}
	return w.store.ChallengeFailed(ctx, d.ChallengeID, "gave up: "+reason)
}
