// Package reaper runs the time-driven sweeps: expiry of links, codes,
// sessions and idempotency keys, purge after retention, and the repairs that make Postgres the
// source of truth (re-publishing stuck outbox rows, re-emitting
// notifications whose event was lost). Any number of reapers may run: every
// sweep claims its rows with FOR UPDATE SKIP LOCKED.
package reaper

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the sweeps run.
type Store interface {
	ExpireDue(ctx context.Context, batch int) (int, error)
	ExpireChallenges(ctx context.Context, batch int) (int, error)
	DeleteOldChallenges(ctx context.Context, batch int) (int, error)
	DeleteExpiredSessions(ctx context.Context, batch int) (int, error)
	DeleteOldIdempotencyKeys(ctx context.Context, batch int) (int, error)
	RemindUnopened(ctx context.Context, batch int) (taken, reminded int, err error)
	PurgeEnded(ctx context.Context, retention time.Duration, batch int) (int, error)
	StaleOutbox(ctx context.Context, age time.Duration) (int, error)
	ReemitStuckNotifications(ctx context.Context, fresh, stale time.Duration, batch int) (int, error)
	ReemitStuckChallenges(ctx context.Context, fresh time.Duration, batch int) (int, error)
	SealAudit(ctx context.Context, batch int) (int, error)
	AuditSealLag(ctx context.Context) (time.Duration, error)
}

// Expiry defaults, measured on 2 cores (BENCHMARKS.md, session 3): for a
// million links due at once, one worker left a core idle (70 s), three
// fought the relays and the stream for the cores (61 s), two took
// 48-57 s; 5000 rows a batch beat 2000.
const (
	DefaultBatch   = 5000
	DefaultWorkers = 2
)

// Config tunes the sweeps; zero values take the defaults.
type Config struct {
	Interval     time.Duration // default 15s
	Batch        int           // rows per statement, default DefaultBatch
	Workers      int           // concurrent expiry statements, default DefaultWorkers (SKIP LOCKED keeps them disjoint)
	Retention    time.Duration // purge this long after a link ended; 0 keeps forever
	StaleOutbox  time.Duration // unpublished this long counts as a repair, default 30s
	FreshStuck   time.Duration // a never-attempted notification is stuck after this, default 2m
	StaleStuck   time.Duration // any queued notification is stuck after this, default 75m (> max retry delay)
	CodeStuck    time.Duration // a never-attempted code request is stuck after this, default 20s
	QueryTimeout time.Duration // per statement, default 30s
}

func (c Config) withDefaults() Config {
	c.Interval = cmp.Or(c.Interval, 15*time.Second)
	c.Batch = cmp.Or(c.Batch, DefaultBatch)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.StaleOutbox = cmp.Or(c.StaleOutbox, 30*time.Second)
	c.FreshStuck = cmp.Or(c.FreshStuck, 2*time.Minute)
	c.StaleStuck = cmp.Or(c.StaleStuck, 75*time.Minute)
	c.CodeStuck = cmp.Or(c.CodeStuck, 20*time.Second)
	c.QueryTimeout = cmp.Or(c.QueryTimeout, 30*time.Second)
	return c
}

// Metrics are the reaper's metrics.
type Metrics struct {
	Expired  prometheus.Counter
	Reminded prometheus.Counter
	Sealed   prometheus.Counter
	SealLag  prometheus.Gauge
	Duration *prometheus.HistogramVec
	Last     *prometheus.GaugeVec
	Repairs  *prometheus.CounterVec
}

// NewMetrics registers the reaper metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sharelinks_reaper_links_expired_total", Help: "Links marked expired by the reaper.",
		}),
		Reminded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sharelinks_reaper_reminders_total", Help: "Reminders queued to recipients of links not opened before they expire.",
		}),
		Sealed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sharelinks_audit_events_sealed_total", Help: "Audit events sealed into their link's hash chain.",
		}),
		SealLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sharelinks_audit_seal_lag_seconds",
			Help: "Age of the oldest audit event not sealed yet (0: all sealed), as of this reaper's last sweep.",
		}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sharelinks_reaper_sweep_duration_seconds", Help: "Duration of one sweep, by sweep.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"sweep"}),
		Last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sharelinks_reaper_last_sweep_timestamp_seconds", Help: "When each sweep last completed.",
		}, []string{"sweep"}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sharelinks_repairs_total", Help: "Repairs of stuck state, by kind.",
		}, []string{"kind"}),
	}
	for _, k := range []string{"outbox_republish", "notification_reemit", "otp_reemit"} {
		m.Repairs.WithLabelValues(k)
	}
	reg.MustRegister(m.Expired, m.Reminded, m.Sealed, m.SealLag, m.Duration, m.Last, m.Repairs)
	return m
}

// Reaper runs the sweeps on a ticker.
type Reaper struct {
	store   Store
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
}

// New builds a reaper.
func New(store Store, cfg Config, log *slog.Logger, m *Metrics) *Reaper {
	return &Reaper{store: store, cfg: cfg.withDefaults(), log: log, metrics: m}
}

// Run sweeps at once and then every interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		r.RunOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep runs fn in batches until a batch comes back short.
func (r *Reaper) sweep(ctx context.Context, name string, fn func(ctx context.Context) (int, error)) int {
	return r.run(ctx, name, false, fn)
}

// run runs fn once, or in batches until one comes back short.
func (r *Reaper) run(ctx context.Context, name string, once bool, fn func(ctx context.Context) (int, error)) int {
	start := time.Now()
	total := 0
	for ctx.Err() == nil {
		// A statement in flight at the signal runs to its end: cancelled,
		// it could still commit on the server after this process had
		// flushed its outbox, leaving its events for another relay.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.QueryTimeout)
		n, err := fn(qctx)
		cancel()
		total += n
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				r.log.Error("sweep failed; next interval retries", "sweep", name, "err", err)
			}
			break
		}
		if once || n < r.cfg.Batch {
			break
		}
	}
	r.metrics.Duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
	r.metrics.Last.WithLabelValues(name).SetToCurrentTime()
	if total > 0 {
		r.log.Info("swept", "sweep", name, "rows", total, "took", time.Since(start).Round(time.Millisecond))
	}
	return total
}

// RunOnce runs every sweep once.
func (r *Reaper) RunOnce(ctx context.Context) {
	b := r.cfg.Batch
	// Expiry can face a million links due at once: statements in parallel
	// keep both the CPU and the disk busy (each batch waits on its
	// commit), and SKIP LOCKED gives them disjoint rows.
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.sweep(ctx, "expire_links", func(ctx context.Context) (int, error) {
				n, err := r.store.ExpireDue(ctx, b)
				r.metrics.Expired.Add(float64(n))
				return n, err
			})
		}()
	}
	wg.Wait()
	r.sweep(ctx, "expire_codes", func(ctx context.Context) (int, error) { return r.store.ExpireChallenges(ctx, b) })
	r.sweep(ctx, "delete_codes", func(ctx context.Context) (int, error) { return r.store.DeleteOldChallenges(ctx, b) })
	r.sweep(ctx, "expire_sessions", func(ctx context.Context) (int, error) { return r.store.DeleteExpiredSessions(ctx, b) })
	r.sweep(ctx, "remind_unopened", func(ctx context.Context) (int, error) {
		taken, reminded, err := r.store.RemindUnopened(ctx, b)
		r.metrics.Reminded.Add(float64(reminded))
		return taken, err
	})
	r.sweep(ctx, "expire_idempotency_keys", func(ctx context.Context) (int, error) { return r.store.DeleteOldIdempotencyKeys(ctx, b) })
	if r.cfg.Retention > 0 {
		r.sweep(ctx, "purge", func(ctx context.Context) (int, error) { return r.store.PurgeEnded(ctx, r.cfg.Retention, b) })
	}
	// Sealing follows the sweeps, so the events they wrote this round are
	// sealed this round (their transactions have ended).
	r.sweep(ctx, "seal_audit", func(ctx context.Context) (int, error) {
		n, err := r.store.SealAudit(ctx, b)
		r.metrics.Sealed.Add(float64(n))
		return n, err
	})
	if lag, err := r.store.AuditSealLag(ctx); err == nil {
		r.metrics.SealLag.Set(lag.Seconds())
	} else if !errors.Is(err, context.Canceled) {
		r.log.Error("read audit seal lag", "err", err)
	}
	r.repair(ctx, "outbox_republish", func(ctx context.Context) (int, error) { return r.store.StaleOutbox(ctx, r.cfg.StaleOutbox) })
	r.repair(ctx, "notification_reemit", func(ctx context.Context) (int, error) {
		return r.store.ReemitStuckNotifications(ctx, r.cfg.FreshStuck, r.cfg.StaleStuck, b)
	})
	r.repair(ctx, "otp_reemit", func(ctx context.Context) (int, error) {
		return r.store.ReemitStuckChallenges(ctx, r.cfg.CodeStuck, b)
	})
}

func (r *Reaper) repair(ctx context.Context, kind string, fn func(context.Context) (int, error)) {
	// One pass per interval: repairs are rare, counted, and not looped.
	n := r.run(ctx, kind, true, fn)
	if n > 0 {
		r.metrics.Repairs.WithLabelValues(kind).Add(float64(n))
		r.log.Warn("repaired stuck state", "kind", kind, "rows", n)
	}
}
