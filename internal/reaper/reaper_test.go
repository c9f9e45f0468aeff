package reaper_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/reaper"
	"github.com/sharelinks/sharelinks/internal/testkit"
	"github.com/sharelinks/sharelinks/schemas"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type bundle struct {
	pool    *pgxpool.Pool
	store   *postgres.Store
	ownerID string
}

func setup(t *testing.T) bundle {
	t.Helper()
	dbURL := testkit.MigratedDB(t)
	pool, err := postgres.Open(context.Background(), dbURL, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var owner string
	if err := pool.QueryRow(context.Background(), `INSERT INTO owners (name) VALUES ('o') RETURNING id::text`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	return bundle{pool: pool, store: postgres.NewStore(pool, nil), ownerID: owner}
}

// seedLinks bulk-inserts n links expiring at expiresIn from now.
func seedLinks(t *testing.T, b bundle, n int, expiresIn time.Duration) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), `
		INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, targets, expires_at)
		SELECT sharelinks_uuid_v7(), $1, sha256(g::text::bytea || random()::text::bytea), '\x00', 'view', 'none',
			'[{"id":"t","type":"file"}]', now() + $3 * interval '1 second'
		FROM generate_series(1, $2) g`, b.ownerID, n, expiresIn.Seconds())
	if err != nil {
		t.Fatal(err)
	}
}

// outboxEvents lists every event waiting in the outbox, one row per event
// (subject, event): a row holds one event or, written by a sweep, a JSON
// array of them.
const outboxEvents = `(SELECT o.subject, ev FROM outbox o, jsonb_array_elements(
	CASE WHEN jsonb_typeof(convert_from(o.payload, 'UTF8')::jsonb) = 'array' THEN convert_from(o.payload, 'UTF8')::jsonb
	ELSE jsonb_build_array(convert_from(o.payload, 'UTF8')::jsonb) END) ev) x`

func count(t *testing.T, b bundle, q string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestExpiresDueLinksWithOneEventEach(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seedLinks(t, b, 30, -time.Second)
	seedLinks(t, b, 5, time.Hour)
	reg := prometheus.NewRegistry()
	m := reaper.NewMetrics(reg)
	r := reaper.New(b.store, reaper.Config{Interval: 50 * time.Millisecond, Batch: 7}, quiet, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	testkit.Eventually(t, 5*time.Second, func() bool {
		return count(t, b, `SELECT count(*) FROM links WHERE status = 'expired'`) == 30
	}, "30 due links expired within an interval")
	if n := count(t, b, `SELECT count(*) FROM links WHERE status = 'active'`); n != 5 {
		t.Fatalf("%d active links left, want 5", n)
	}
	if n := count(t, b, `SELECT count(*) FROM `+outboxEvents+` WHERE subject = 'sharelinks.events.link.expired'`); n != 30 {
		t.Fatalf("%d expired events, want 30", n)
	}
	if n := count(t, b, `SELECT count(DISTINCT ev->>'link_id') FROM `+outboxEvents); n != 30 {
		t.Fatalf("expired events name %d links, want 30", n)
	}
	rows, err := b.pool.Query(ctx, `SELECT ev::text FROM `+outboxEvents)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := schemas.ValidateEvent([]byte(ev)); err != nil {
			t.Fatalf("expired event fails its schema: %v\n%s", err, ev)
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(m.Expired) == 30 },
		"expired metric reaches 30 (now %v)", testutil.ToFloat64(m.Expired))
	// The sweep's link.expired events are sealed into their links' chains
	// by the same reaper, one chain of one event per link.
	testkit.Eventually(t, 5*time.Second, func() bool {
		return count(t, b, `SELECT count(*) FROM audit_seals s JOIN audit_events a ON a.id = s.event_id
			WHERE a.type = 'link.expired' AND s.seq = 1`) == 30 && testutil.ToFloat64(m.Sealed) == 30 &&
			testutil.ToFloat64(m.SealLag) == 0
	}, "30 link.expired events sealed (metric %v, lag %v)", testutil.ToFloat64(m.Sealed), testutil.ToFloat64(m.SealLag))
	// A link that expires later is picked up by a later interval.
	if _, err := b.pool.Exec(ctx, `UPDATE links SET expires_at = now() WHERE status = 'active'`); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		return count(t, b, `SELECT count(*) FROM links WHERE status = 'expired'`) == 35
	}, "later links expired by the next interval")
}

func TestTwoReapersRaceWithoutDoubleExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 100_000
	seedLinks(t, b, n, -time.Second)
	var wg sync.WaitGroup
	totals := make([]int, 2)
	// Both start at once and each takes a hundredth of the links per
	// statement, so both must get batches: the race is always run.
	start := make(chan struct{})
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				got, err := b.store.ExpireDue(context.Background(), n/100)
				if err != nil {
					t.Error(err)
					return
				}
				totals[i] += got
				if got == 0 {
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if totals[0]+totals[1] != n {
		t.Fatalf("reapers expired %d + %d, want %d in all", totals[0], totals[1], n)
	}
	if totals[0] == 0 || totals[1] == 0 {
		t.Fatalf("one reaper did all the work (%v): the race was not run", totals)
	}
	if got := count(t, b, `SELECT count(*) FROM `+outboxEvents); got != n {
		t.Fatalf("%d events, want %d", got, n)
	}
	// One event per link: as many distinct links as events.
	if got := count(t, b, `SELECT count(DISTINCT ev->>'link_id') FROM `+outboxEvents); got != n {
		t.Fatalf("events cover %d links, want %d", got, n)
	}
	// The sweeps recorded each link's expiry once in the audit trail, under
	// the id of its published event.
	if got := count(t, b, `SELECT count(*) FROM audit_events a JOIN `+outboxEvents+` ON (ev->>'id')::uuid = a.id
		WHERE a.type = 'link.expired' AND a.link_id = (ev->>'link_id')::uuid`); got != n {
		t.Fatalf("%d audit rows match the events, want %d", got, n)
	}
	if got := count(t, b, `SELECT count(*) FROM audit_events`); got != n {
		t.Fatalf("%d audit rows, want %d", got, n)
	}
}

func TestPurgeAfterRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seedLinks(t, b, 10, -time.Second)
	r := reaper.New(b.store, reaper.Config{Retention: time.Hour}, quiet, reaper.NewMetrics(prometheus.NewRegistry()))
	r.RunOnce(context.Background())
	if n := count(t, b, `SELECT count(*) FROM links`); n != 10 {
		t.Fatalf("purged before retention: %d left", n)
	}
	if _, err := b.pool.Exec(context.Background(), `UPDATE links SET ended_at = now() - interval '2 hours' WHERE id IN (SELECT id FROM links LIMIT 4)`); err != nil {
		t.Fatal(err)
	}
	// A session on every link: the purged links' go with them (sessions
	// have no foreign key to cascade), the others' stay.
	if _, err := b.pool.Exec(context.Background(), `INSERT INTO access_sessions (id, link_id, token_hash, expires_at)
		SELECT sharelinks_uuid_v7(), id, sha256(id::text::bytea), now() + interval '1 hour' FROM links`); err != nil {
		t.Fatal(err)
	}
	r.RunOnce(context.Background())
	if n := count(t, b, `SELECT count(*) FROM links`); n != 6 {
		t.Fatalf("%d links left, want 6", n)
	}
	if n := count(t, b, `SELECT count(*) FROM access_sessions s WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.id = s.link_id)`); n != 0 {
		t.Fatalf("%d sessions of purged links left", n)
	}
	if n := count(t, b, `SELECT count(*) FROM access_sessions`); n != 6 {
		t.Fatalf("%d sessions left, want the 6 of the links kept", n)
	}
	if n := count(t, b, `SELECT count(*) FROM `+outboxEvents+` WHERE subject = 'sharelinks.events.link.purged'`); n != 4 {
		t.Fatalf("%d purged events, want 4", n)
	}
	keep := reaper.New(b.store, reaper.Config{Retention: 0}, quiet, reaper.NewMetrics(prometheus.NewRegistry()))
	if _, err := b.pool.Exec(context.Background(), `UPDATE links SET ended_at = now() - interval '1000 days'`); err != nil {
		t.Fatal(err)
	}
	keep.RunOnce(context.Background())
	if n := count(t, b, `SELECT count(*) FROM links`); n != 6 {
		t.Fatalf("retention 0 purged: %d left", n)
	}
}

// Open challenges past their time are marked expired, and every challenge
// is deleted an hour after it expired; newer ones are kept as they are.
func TestChallengesExpireAndGoAnHourLater(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seedLinks(t, b, 1, time.Hour)
	ctx := context.Background()
	// expires_at relative to now, and the status each should have after a sweep.
	cases := []struct {
		expires      string
		status, want string
	}{
		{"5 minutes", "sent", "sent"},
		{"-5 minutes", "sent", "expired"},
		{"-5 minutes", "verified", "verified"},
		{"-59 minutes", "pending", "expired"},
		{"-61 minutes", "sent", ""},
		{"-3 hours", "verified", ""},
	}
	for i, c := range cases {
		if _, err := b.pool.Exec(ctx, `INSERT INTO otp_challenges (id, link_id, channel, recipient, status, expires_at)
			SELECT $1::uuid, id, 'sms', '+15555550100', $2, now() + $3::interval FROM links`,
			uuid.NewSHA1(uuid.Nil, []byte{byte(i)}), c.status, c.expires); err != nil {
			t.Fatal(err)
		}
	}
	r := reaper.New(b.store, reaper.Config{}, quiet, reaper.NewMetrics(prometheus.NewRegistry()))
	r.RunOnce(ctx)
	for i, c := range cases {
		var status string
		err := b.pool.QueryRow(ctx, `SELECT status FROM otp_challenges WHERE id = $1`, uuid.NewSHA1(uuid.Nil, []byte{byte(i)})).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			status = ""
		} else if err != nil {
			t.Fatal(err)
		}
		if status != c.want {
			t.Errorf("challenge %s expiring in %s: %q after a sweep, want %q", c.status, c.expires, status, c.want)
		}
	}
}

func TestRepairsReemitLostNotificationEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seedLinks(t, b, 1, time.Hour)
	ctx := context.Background()
	var linkID string
	if err := b.pool.QueryRow(ctx, `SELECT id::text FROM links`).Scan(&linkID); err != nil {
		t.Fatal(err)
	}
	// A notification whose event never reached the stream, another being
	// retried (recent attempt), another sent.
	_, err := b.pool.Exec(ctx, `INSERT INTO notifications (id, owner_id, link_id, channel, recipient, status, attempts, updated_at) VALUES
		(sharelinks_uuid_v7(), $1, $2, 'email', 'lost@example.com', 'queued', 0, now() - interval '10 minutes'),
		(sharelinks_uuid_v7(), $1, $2, 'email', 'retrying@example.com', 'queued', 3, now() - interval '10 minutes'),
		(sharelinks_uuid_v7(), $1, $2, 'email', 'sent@example.com', 'sent', 1, now() - interval '10 hours')`, b.ownerID, linkID)
	if err != nil {
		t.Fatal(err)
	}
	// An outbox row left unpublished (NATS was down, relay died).
	if _, err := b.pool.Exec(ctx, `INSERT INTO outbox (id, subject, payload, created_at) VALUES (sharelinks_uuid_v7(), 's', '\x7b7d', now() - interval '5 minutes')`); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := reaper.NewMetrics(reg)
	r := reaper.New(b.store, reaper.Config{}, quiet, m)
	r.RunOnce(ctx)
	if got := count(t, b, `SELECT count(*) FROM outbox WHERE subject = 'sharelinks.events.notification.requested'`); got != 1 {
		t.Fatalf("%d re-emitted notification events, want 1", got)
	}
	var payload string
	if err := b.pool.QueryRow(ctx, `SELECT convert_from(payload, 'UTF8') FROM outbox WHERE subject = 'sharelinks.events.notification.requested'`).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	if err := schemas.ValidateEvent([]byte(payload)); err != nil {
		t.Fatalf("re-emitted event fails its schema: %v\n%s", err, payload)
	}
	// Recorded with it, like every event: the owner's trail shows the re-emit.
	if got := count(t, b, `SELECT count(*) FROM audit_events a JOIN outbox o ON o.id = a.id
		WHERE a.type = 'notification.requested' AND a.link_id = '`+linkID+`'`); got != 1 {
		t.Fatalf("%d audit rows for the re-emitted event, want 1", got)
	}
	if got := testutil.ToFloat64(m.Repairs.WithLabelValues("notification_reemit")); got != 1 {
		t.Fatalf("notification repairs metric %v", got)
	}
	if got := testutil.ToFloat64(m.Repairs.WithLabelValues("outbox_republish")); got != 1 {
		t.Fatalf("outbox repairs metric %v", got)
	}
	// Right after a repair the row is fresh again: no second re-emit.
	r.RunOnce(ctx)
	if got := count(t, b, `SELECT count(*) FROM outbox WHERE subject = 'sharelinks.events.notification.requested'`); got != 1 {
		t.Fatalf("re-emitted twice: %d", got)
	}
}

// newRelay starts a JetStream server with the event streams and a relay
// over b's outbox.
func newRelay(t *testing.T, b bundle) (jetstream.JetStream, *events.Relay) {
	t.Helper()
	url, _ := testkit.NATS(t)
	js := testkit.JetStream(t, url)
	if err := events.EnsureStreams(context.Background(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return js, events.NewRelay(b.pool, js, quiet, events.NewRelayMetrics(prometheus.NewRegistry()))
}

// A sweep writes its events as one outbox row; the relay must publish each
// event as its own message, with its own id, and a row published twice
// (acked, then its delete lost) must not duplicate any.
func TestRelayPublishesEachSweptEventOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const n = 2500
	seedLinks(t, b, n, -time.Second)
	for {
		got, err := b.store.ExpireDue(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			break
		}
	}
	if rows := count(t, b, `SELECT count(*) FROM outbox`); rows != 3 {
		t.Fatalf("%d outbox rows for 3 sweeps", rows)
	}
	// Keep a copy of one row to publish again after the relay deleted it.
	if _, err := b.pool.Exec(ctx, `CREATE TABLE outbox_copy AS SELECT * FROM outbox ORDER BY id LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	js, relay := newRelay(t, b)
	relay.Batch = 2 // two rows, then one: a claim that ends mid-outbox
	if published, err := relay.Flush(ctx, ""); err != nil || published != 3 {
		t.Fatalf("flush: %d rows, %v", published, err)
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO outbox SELECT * FROM outbox_copy`); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Flush(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if left := count(t, b, `SELECT count(*) FROM outbox`); left != 0 {
		t.Fatalf("%d outbox rows left", left)
	}
	stream, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("%d messages in the stream, want %d", info.State.Msgs, n)
	}
	links, ids := map[string]bool{}, map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.ValidateEvent(msg.Data); err != nil {
			t.Fatalf("message %d fails its schema: %v\n%s", seq, err, msg.Data)
		}
		e, err := events.Parse(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject != events.SubjectPrefix+events.LinkExpired || msg.Header.Get(jetstream.MsgIDHeader) != e.ID {
			t.Fatalf("message %d: subject %s, msg id %q, event id %s", seq, msg.Subject, msg.Header.Get(jetstream.MsgIDHeader), e.ID)
		}
		links[e.LinkID], ids[e.ID] = true, true
	}
	if len(links) != n || len(ids) != n {
		t.Fatalf("%d links and %d event ids in %d messages", len(links), len(ids), n)
	}
}

// An outbox row the relay cannot read stays behind and is reported; it
// does not hold up the rows claimed with it.
func TestRelaySkipsAnUnreadableRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	seedLinks(t, b, 10, -time.Second)
	if _, err := b.pool.Exec(ctx, `INSERT INTO outbox (id, subject, payload)
		VALUES (sharelinks_uuid_v7(), 'sharelinks.events.link.expired', convert_to('[{"type":"link.expired"}]', 'UTF8'))`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.ExpireDue(ctx, 100); err != nil {
		t.Fatal(err)
	}
	js, relay := newRelay(t, b)
	if published, err := relay.Flush(ctx, ""); err == nil || published != 1 {
		t.Fatalf("flush: %d rows published, err %v; want the sweep's row and an error for the other", published, err)
	}
	if left := count(t, b, `SELECT count(*) FROM outbox`); left != 1 {
		t.Fatalf("%d outbox rows left, want the unreadable one", left)
	}
	stream, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 10 {
		t.Fatalf("stream: %+v %v, want the 10 expired events", info, err)
	}
}

// A busy relay is woken by every commit. With Spacing it gathers the rows
// committed while it waits into one claim, where it used to pay a claim
// transaction for each; an idle relay still publishes at once.
func TestBusyRelayGathersCommitsIntoOneClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, _ := newRelay(t, b)
	m := events.NewRelayMetrics(prometheus.NewRegistry())
	relay := events.NewRelay(b.pool, js, quiet, m)
	relay.Parallel = 1
	relay.Poll = time.Hour // only wakes flush
	relay.Spacing = 2 * time.Second
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()

	commit := func() {
		t.Helper()
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := b.pool.Exec(ctx, `INSERT INTO outbox (id, subject, payload) VALUES ($1, $2, $3)`,
			id, events.SubjectPrefix+events.LinkCreated, []byte(`{"id":"`+id+`"}`)); err != nil {
			t.Fatal(err)
		}
		relay.Wake()
	}
	drained := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for count(t, b, `SELECT count(*) FROM outbox`) > 0 {
			if time.Now().After(deadline) {
				t.Fatal("outbox not drained")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	start := time.Now()
	commit()
	drained()
	if took := time.Since(start); took >= relay.Spacing {
		t.Fatalf("an idle relay took %v to publish, as long as its spacing", took)
	}
	// Five commits, each waking the relay, well inside one spacing.
	for range 5 {
		commit()
		time.Sleep(20 * time.Millisecond)
	}
	drained()
	var h dto.Metric
	if err := m.Claimed.Write(&h); err != nil {
		t.Fatal(err)
	}
	if n, rows := h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum(); n != 2 || rows != 6 {
		t.Fatalf("%d claims for %v rows, want 2 claims (1 row, then the 5 gathered)", n, rows)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
