// Package bootstrap starts what every worker binary shares: config, logger,
// Postgres, NATS with the streams, the outbox relay, and the ops server
// (/metrics, /healthz, /readyz). A missing or unreachable dependency fails
// Start with one line naming the setting and what was tried.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/config"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/obs"
	"github.com/sharelinks/sharelinks/internal/postgres"
)

// Worker is a started worker process's shared parts.
type Worker struct {
	Name     string
	Log      *slog.Logger
	Pool     *pgxpool.Pool
	NC       *nats.Conn
	JS       jetstream.JetStream
	Registry *prometheus.Registry
	Ready    *obs.Readiness
	Relay    *events.Relay
	Consumed *events.ConsumerMetrics

	lis net.Listener
	srv *http.Server
	// stopping unregisters the log line written when the run's context ends.
	stopping func() bool
}

// Settings are the shared worker settings.
type Settings struct {
	config.Common
	MetricsAddr string
	DBMaxConns  int
}

// Bind binds the shared worker settings.
func Bind(set *config.Set, s *Settings, defaultMetrics string) {
	set.BindCommon(&s.Common, true, true)
	set.String(&s.MetricsAddr, "METRICS_ADDR", defaultMetrics, "address of /metrics, /healthz and /readyz")
	set.Int(&s.DBMaxConns, "DB_MAX_CONNS", 8, "Postgres pool size")
}

// Start connects everything; Close releases it.
func Start(ctx context.Context, name, version string, s Settings) (*Worker, error) {
	w := &Worker{Name: name, Log: obs.NewLogger(os.Stderr, s.LogFormat, s.LogLevel).With("service", name)}
	var err error
	if w.lis, err = net.Listen("tcp", s.MetricsAddr); err != nil {
		return nil, fmt.Errorf("METRICS_ADDR: listen on %s: %w", s.MetricsAddr, err)
	}
	if w.Pool, err = postgres.Open(ctx, s.DatabaseURL, int32(s.DBMaxConns)); err != nil {
		w.lis.Close()
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if w.NC, err = events.Connect(s.NATSURL, "sharelinks-"+name, w.Log); err != nil {
		w.Close()
		return nil, fmt.Errorf("NATS_URL: %w", err)
	}
	if w.JS, err = jetstream.New(w.NC, jetstream.WithPublishAsyncTimeout(5*time.Second)); err != nil {
		w.Close()
		return nil, fmt.Errorf("NATS_URL: jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(sctx, w.JS, events.StreamOptions{Replicas: s.StreamReplicas}); err != nil {
		w.Close()
		return nil, fmt.Errorf("NATS_URL: %w", err)
	}
	w.Registry = obs.NewRegistry(version)
	w.Consumed = events.NewConsumerMetrics(w.Registry)
	w.Relay = events.NewRelay(w.Pool, w.JS, w.Log, events.NewRelayMetrics(w.Registry))
	w.Ready = obs.NewReadiness()
	w.Ready.Add("postgres", func(ctx context.Context) error { return w.Pool.Ping(ctx) })
	w.Ready.Add("nats", func(context.Context) error {
		if st := w.NC.Status(); st != nats.CONNECTED {
			return fmt.Errorf("nats %s", st)
		}
		return nil
	})
	mux := http.NewServeMux()
	obs.Handle(mux, w.Registry, w.Ready)
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = w.srv.Serve(w.lis) }()
	w.Log.Info("started", "metrics_addr", w.lis.Addr().String(), "version", version)
	// A deploy's SIGTERM shows in the log when it lands, not only when the
	// process is gone: in-flight sends may take a while to finish.
	w.stopping = context.AfterFunc(ctx, func() {
		w.Log.Info("stopping: fetching nothing new, finishing or handing back in-flight work, then draining NATS")
	})
	return w, nil
}

// Run runs work until it returns (its context ends at the signal), with
// the outbox relay beside it. The relay stops only after work has
// returned, so its last flush publishes what work committed last, even
// after the signal: a sweep or a send finishing then leaves nothing in the
// outbox behind it.
func (w *Worker) Run(ctx context.Context, work func(context.Context) error) error {
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	relayed := make(chan error, 1)
	go func() { relayed <- w.Relay.Run(rctx) }()
	err := work(ctx)
	stop()
	return errors.Join(err, <-relayed)
}

// Close drains NATS and closes everything Start opened.
func (w *Worker) Close() {
	if w.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = w.srv.Shutdown(ctx)
		cancel()
	} else if w.lis != nil {
		w.lis.Close()
	}
	if w.NC != nil {
		if err := w.NC.Drain(); err != nil {
			w.NC.Close()
		}
	}
	if w.Pool != nil {
		w.Pool.Close()
	}
	if w.stopping != nil {
		w.stopping()
		w.Log.Info("stopped")
	}
}
