// Command notifier delivers what the API queues: the "Open" notification
// emails and SMS, and the one-time codes of OTP links. Its two durable
// consumers (notifier, otp) scale independently: run as many processes as
// you like; each message is handled by one of them at a time.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sharelinks/sharelinks/internal/bootstrap"
	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/config"
	"github.com/sharelinks/sharelinks/internal/delivery"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/mail"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/sms"
	"github.com/sharelinks/sharelinks/internal/webhook"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "notifier:", err)
		os.Exit(1)
	}
}

type settings struct {
	bootstrap.Settings
	PublicBaseURL  string
	SMSRegions     string
	SMTPURL        string
	MailFrom       string
	MailSinkDir    string
	TwilioSID      string
	TwilioToken    string
	TwilioFrom     string
	TwilioService  string
	TwilioAPIURL   string
	SMSSinkDir     string
	BrandName      string
	BrandLogo      string
	BrandAccent    string
	RetryBase      time.Duration
	RetryMax       time.Duration
	RetryAttempts  int
	Concurrency    int
	OTPConcurrency int
	Consumers      string
	WebhookPrivate bool
}

func run(ctx context.Context, args []string) error {
	var s settings
	set := config.New("notifier")
	bootstrap.Bind(set, &s.Settings, ":9091")
	set.Required(&s.PublicBaseURL, "PUBLIC_BASE_URL", "what link URLs start with, e.g. https://share.example.com")
	set.String(&s.SMTPURL, "SMTP_URL", "", "smtp://user:pass@host:port?tls=starttls|tls|none; empty writes mails to MAIL_SINK_DIR")
	set.String(&s.MailFrom, "MAIL_FROM", "sharelinks <no-reply@localhost>", "sender name and address")
	set.String(&s.MailSinkDir, "MAIL_SINK_DIR", ".data/mail", "dev mail sink: where .eml files go when SMTP_URL is empty")
	set.String(&s.TwilioSID, "TWILIO_ACCOUNT_SID", "", "Twilio account SID; empty writes SMS to SMS_SINK_DIR")
	set.String(&s.TwilioToken, "TWILIO_AUTH_TOKEN", "", "Twilio auth token")
	set.String(&s.TwilioFrom, "TWILIO_FROM", "", "sender number (E.164)")
	set.String(&s.TwilioService, "TWILIO_MESSAGING_SERVICE_SID", "", "messaging service SID (instead of TWILIO_FROM)")
	set.String(&s.TwilioAPIURL, "TWILIO_API_URL", "", "override Twilio's API host (tests)")
	set.String(&s.SMSRegions, "SMS_REGIONS", "", "regions whose numbers may be texted, e.g. US,CA,GB (empty: any); as the api's, and checked again before each text")
	set.String(&s.SMSSinkDir, "SMS_SINK_DIR", ".data/sms", "dev SMS sink: where messages go when Twilio is not configured")
	set.String(&s.BrandName, "BRAND_NAME", "sharelinks", "name shown in emails and pages")
	set.String(&s.BrandLogo, "BRAND_LOGO_URL", "", "https URL of a logo for emails and pages")
	set.String(&s.BrandAccent, "BRAND_ACCENT", "#2563eb", "accent colour (#rrggbb)")
	set.Duration(&s.RetryBase, "NOTIFY_RETRY_BASE", 30*time.Second, "first retry delay of a notification; doubles each time")
	set.Duration(&s.RetryMax, "NOTIFY_RETRY_MAX", time.Hour, "longest retry delay")
	set.Int(&s.RetryAttempts, "NOTIFY_MAX_ATTEMPTS", 10, "send attempts before a notification fails")
	set.Int(&s.Concurrency, "NOTIFY_CONCURRENCY", 8, "notifications sent at once by this process")
	set.Int(&s.OTPConcurrency, "OTP_CONCURRENCY", 8, "codes sent at once by this process")
	set.String(&s.Consumers, "CONSUMERS", "notifier,otp", "which consumers this process runs (notifier, otp)")
	set.Bool(&s.WebhookPrivate, "WEBHOOK_ALLOW_PRIVATE", false, "allow webhook deliveries to loopback/private addresses")
	if err := set.Parse(args); err != nil {
		return err
	}
	w, err := bootstrap.Start(ctx, "notifier", version, s.Settings)
	if err != nil {
		return err
	}
	defer w.Close()

	var mailer delivery.MailSender
	if s.SMTPURL != "" {
		m, err := mail.NewSMTP(s.SMTPURL, s.MailFrom, mail.WithLogger(w.Log))
		if err != nil {
			return fmt.Errorf("SMTP_URL: %w", err)
		}
		defer m.Close()
		mailer = m
	} else {
		if err := os.MkdirAll(s.MailSinkDir, 0o755); err != nil {
			return fmt.Errorf("MAIL_SINK_DIR: %w", err)
		}
		mailer = mail.NewFileSink(s.MailSinkDir, s.MailFrom)
		w.Log.Info("SMTP_URL not set: mails are written to the dev mail sink", "dir", s.MailSinkDir)
	}
	var texter delivery.SMSSender
	if s.TwilioSID != "" {
		t, err := sms.NewTwilio(sms.TwilioConfig{AccountSID: s.TwilioSID, AuthToken: s.TwilioToken, From: s.TwilioFrom,
			MessagingServiceSID: s.TwilioService, APIURL: s.TwilioAPIURL})
		if err != nil {
			return fmt.Errorf("TWILIO_ACCOUNT_SID: %w", err)
		}
		texter = t
	} else {
		if err := os.MkdirAll(s.SMSSinkDir, 0o755); err != nil {
			return fmt.Errorf("SMS_SINK_DIR: %w", err)
		}
		texter = sms.NewLogSink(s.SMSSinkDir, w.Log)
		w.Log.Info("Twilio not configured: SMS are written to the dev SMS sink", "dir", s.SMSSinkDir)
	}
	regions, err := link.ParseRegions(s.SMSRegions)
	if err != nil {
		return fmt.Errorf("SMS_REGIONS: %w", err)
	}
	store := postgres.NewStore(w.Pool, w.Relay.Wake)
	hooks := webhook.NewDispatcher(store, s.Keys, webhook.Guard{AllowPrivate: s.WebhookPrivate}, webhook.DispatcherConfig{},
		w.Log, webhook.NewMetrics(w.Registry))
	workers := delivery.New(store, s.Keys, mailer, mail.IsTemporary, texter, sms.IsTemporary,
		delivery.Config{
			PublicBaseURL: s.PublicBaseURL,
			Brand:         compose.Brand{Name: s.BrandName, LogoURL: s.BrandLogo, AccentColor: s.BrandAccent},
			Notify:        delivery.Retry{Base: s.RetryBase, Max: s.RetryMax, Attempts: s.RetryAttempts},
			SMSRegions:    regions,
		}, w.Log, delivery.NewMetrics(w.Registry))
	return w.Run(ctx, func(ctx context.Context) error { return runConsumers(ctx, w, workers, hooks, s) })
}

// retiredConsumers are durables earlier versions ran: "audit" (in the
// reaper) and "webhooks", merged into "records", which recorded events in
// the audit trail and enqueued their webhook deliveries. Every event now
// records itself in the transaction that writes it, so no state depends
// on the stream, and records is retired too.
var retiredConsumers = []string{"audit", "webhooks", "records"}

func runConsumers(ctx context.Context, w *bootstrap.Worker, workers *delivery.Workers, hooks *webhook.Dispatcher, s settings) error {
	g, gctx := errgroup.WithContext(ctx)
	specs := map[string]struct {
		spec        events.ConsumerSpec
		handler     events.Handler
		dead        func(context.Context, events.Event, string) error
		concurrency int
	}{
		// MaxDeliver leaves room above the send attempts for deliveries lost
		// to crashes or database hiccups.
		"notifier": {events.ConsumerSpec{Name: "notifier", Types: []string{events.NotificationRequested}, MaxDeliver: s.RetryAttempts + 5},
			workers.HandleNotification, workers.DeadNotification, s.Concurrency},
		"otp": {events.ConsumerSpec{Name: "otp", Types: []string{events.OTPRequested}, MaxDeliver: 8},
			workers.HandleOTP, workers.DeadOTP, s.OTPConcurrency},
	}
	if err := events.RetireConsumers(ctx, w.JS, retiredConsumers...); err != nil {
		return fmt.Errorf("NATS_URL: %w", err)
	}
	// Webhook deliveries are rows their events' statements wrote: every
	// notifier sends them (claims keep two from sending one).
	g.Go(func() error { return hooks.Run(gctx) })
	var running []events.Runner
	for _, name := range splitList(s.Consumers) {
		if name == "records" {
			w.Log.Warn("CONSUMERS: records is retired (every event records itself now); ignoring it")
			continue
		}
		c, ok := specs[name]
		if !ok {
			return fmt.Errorf("CONSUMERS: unknown consumer %q (notifier, otp)", name)
		}
		cons, err := events.EnsureConsumer(ctx, w.JS, c.spec)
		if err != nil {
			return fmt.Errorf("NATS_URL: %w", err)
		}
		wk := &events.Worker{Name: name, Consumer: cons, JS: w.JS, Handler: c.handler, OnDeadLetter: c.dead,
			Concurrency: c.concurrency, MaxDeliver: c.spec.MaxDeliver, Log: w.Log, Metrics: w.Consumed,
			Unavailable: postgres.Unavailable}
		running = append(running, wk)
		g.Go(func() error { return wk.Run(gctx) })
	}
	w.Ready.Add("consumers", events.ReadyCheck(running...))
	w.Log.Info("consumers running", "consumers", s.Consumers)
	return g.Wait()
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
