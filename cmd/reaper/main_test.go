package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// A reaper stopped (SIGTERM: its context ends) in the middle of a mass
// expiry publishes what it expired before it exits; after a restart every
// link has been expired once and has exactly one link.expired in
// JetStream.
func TestShutdownMidExpiryLosesAndDuplicatesNothing(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	count := func(q string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const n = 50_000
	if _, err := pool.Exec(ctx, `
		WITH o AS (INSERT INTO owners (name) VALUES ('o') RETURNING id)
		INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, targets, expires_at)
		SELECT sharelinks_uuid_v7(), o.id, sha256(g::text::bytea), '\x00', 'view', 'none',
			'[{"id":"t","type":"file"}]', now() - interval '1 second'
		FROM o, generate_series(1, $1) g`, n); err != nil {
		t.Fatal(err)
	}
	args := []string{"--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret,
		"--metrics-addr", "127.0.0.1:0", "--reap-interval", "100ms", "--reap-batch", "1000", "--log-level", "error"}
	start := func() (stop func() error) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(rctx, args) }()
		return func() error { cancel(); return <-done }
	}
	const expired = `SELECT count(*) FROM links WHERE status = 'expired'`

	stop := start()
	testkit.Eventually(t, 30*time.Second, func() bool { return count(expired) >= 3000 }, "expiry started")
	if err := stop(); err != nil { // SIGTERM mid-expiry
		t.Fatalf("reaper exit: %v", err)
	}
	atStop := count(expired)
	if atStop == n {
		t.Fatalf("all %d links expired before the stop: the test needs more of them", n)
	}
	if left := count(`SELECT count(*) FROM outbox`); left != 0 {
		t.Errorf("%d outbox rows left behind by a clean shutdown", left)
	}

	js := testkit.JetStream(t, natsURL)
	perLink := func() map[string]int {
		t.Helper()
		cons, err := js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.SubjectPrefix + events.LinkExpired}})
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for left := int(info.NumPending); left > 0; {
			batch, err := cons.Fetch(min(left, 5000), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				e, err := events.Parse(m.Data())
				if err != nil {
					t.Fatal(err)
				}
				out[e.LinkID]++
				got++
			}
			if got == 0 {
				t.Fatalf("fetch stalled with %d messages to go: %v", left, batch.Error())
			}
			left -= got
		}
		return out
	}
	if got := perLink(); len(got) != atStop {
		t.Errorf("%d links expired at the stop, %d with a link.expired in JetStream", atStop, len(got))
	}

	stop = start()
	testkit.Eventually(t, 60*time.Second, func() bool {
		return count(expired) == n && count(`SELECT count(*) FROM outbox`) == 0
	}, "all expired and published after the restart")
	if err := stop(); err != nil {
		t.Fatalf("reaper exit: %v", err)
	}
	got := perLink()
	if len(got) != n {
		t.Errorf("%d of %d links have a link.expired", len(got), n)
	}
	for id, k := range got {
		if k != 1 {
			t.Errorf("link %s has %d link.expired events", id, k)
		}
	}
	t.Logf("%d expired before the stop, %d after the restart", atStop, n-atStop)
}
