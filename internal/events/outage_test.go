package events_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// A database outage longer than a consumer's retries does not use up its
// events' deliveries: the worker holds what it has in hand and what waits
// for a handler (renewing their AckWait), and when Postgres takes
// connections again every event is handled, none is dead-lettered and
// none is left unacked.
func TestDatabaseOutageHoldsEventsWithoutSpendingDeliveries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testkit.Database(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE handled (id uuid PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	url, _ := testkit.NATS(t)
	js := testkit.JetStream(t, url)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	// Few deliveries and a short AckWait: without holding, the outage
	// below outlasts both several times over.
	spec := events.ConsumerSpec{Name: "single", MaxDeliver: 3, AckWait: 2 * time.Second, Types: []string{events.LinkCreated}}
	single, err := events.EnsureConsumer(ctx, js, spec)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for range n {
		e := events.Must(events.LinkCreated, uuid.NewString(), uuid.NewString(), events.System, map[string]any{})
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, e.Subject(), raw, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}

	reopen := testkit.DatabaseOutage(t, pool.Config().ConnConfig)

	insert := func(ctx context.Context, e events.Event) error {
		_, err := pool.Exec(ctx, `INSERT INTO handled VALUES ($1) ON CONFLICT DO NOTHING`, e.ID)
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	w := &events.Worker{Name: "single", Consumer: single, JS: js, Concurrency: 4, MaxDeliver: spec.MaxDeliver,
		Backoff: func(uint64) time.Duration { return 100 * time.Millisecond }, Log: log, Unavailable: postgres.Unavailable,
		Handler: func(ctx context.Context, e events.Event, _ uint64) error { return insert(ctx, e) }}
	go func() { _ = w.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	time.Sleep(5 * time.Second) // > AckWait twice, > 3 deliveries at either worker's retry pace
	reopen()
	count := func() int {
		var c int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM handled`).Scan(&c); err != nil {
			return -1
		}
		return c
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return count() == n }, "every event handled after the outage")
	testkit.Eventually(t, 10*time.Second, func() bool {
		info, err := single.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "consumer settled")
	info, err := single.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Messages still in the client's pull buffer (at most the worker's
	// concurrency) are not held: they may be delivered again once their
	// AckWait runs out, and are then handled once.
	t.Logf("%d deliveries for %d events", info.Delivered.Consumer, n)
	dlq, err := js.Stream(ctx, events.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("dead letters after the outage: %v (%v)", info.State.Msgs, err)
	}
}
