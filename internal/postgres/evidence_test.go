package postgres_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

const chainOwner = "0193a1c4-0000-7000-8000-0000000000aa"

func insertAudit(t *testing.T, exec func(ctx context.Context, sql string, args ...any) error, linkID string, n int) {
	t.Helper()
	if err := exec(context.Background(), `INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
		VALUES ($1, $2, $3, 'link.opened', now(), '{"type":"recipient","ip":"192.0.2.1"}', jsonb_build_object('n', $4::int))`,
		uuid.Must(uuid.NewV7()).String(), chainOwner, linkID, n); err != nil {
		t.Fatal(err)
	}
}

func poolExec(p *pgxpool.Pool) func(ctx context.Context, sql string, args ...any) error {
	return func(ctx context.Context, sql string, args ...any) error {
		_, err := p.Exec(ctx, sql, args...)
		return err
	}
}

// chainStore is a store on a fresh migrated database, its pool of conns.
func chainStore(tb testing.TB, conns int32) (*pgxpool.Pool, *postgres.Store) {
	tb.Helper()
	pool, err := postgres.Open(context.Background(), testkit.MigratedDB(tb), conns)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool, postgres.NewStore(pool, nil)
}

// sealAll seals until nothing is left, as the reaper's sweep does.
func sealAll(t *testing.T, s *postgres.Store) int {
	t.Helper()
	total := 0
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n, err := s.SealAudit(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		lag, err := s.AuditSealLag(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && lag == 0 {
			return total
		}
		if n == 0 {
			// A transaction elsewhere on the server (another test's) holds
			// back the horizon for a moment.
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatal("events still unsealed after 30 s")
	return total
}

// checkChain reads a link's chain back and recomputes it: seqs 1..n with
// no gap, each hash the step from the one before over its record.
func checkChain(t *testing.T, s *postgres.Store, linkID string, want int) {
	t.Helper()
	var got []evidence.Entry
	var head evidence.Head
	var unsealed int64
	err := s.AuditChain(context.Background(), chainOwner, linkID,
		func(h evidence.Head, u int64) error { head, unsealed = h, u; return nil },
		func(e evidence.Entry) error { got = append(got, e); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != want || head.Seq != int64(want) || unsealed != 0 {
		t.Fatalf("link %s: %d entries, head seq %d, %d unsealed; want %d, %d, 0", linkID, len(got), head.Seq, unsealed, want, want)
	}
	prev := evidence.Genesis(linkID)
	for i, e := range got {
		prev = evidence.Next(prev, e.Record)
		if e.Seq != int64(i+1) || e.Hash != hex.EncodeToString(prev) {
			t.Fatalf("link %s entry %d: seq %d hash %s, want seq %d hash %x", linkID, i, e.Seq, e.Hash, i+1, prev)
		}
	}
	if head.Hash != hex.EncodeToString(prev) {
		t.Fatalf("link %s: head %s, chain ends at %x", linkID, head.Hash, prev)
	}
}

// An event whose transaction commits after later ones were sealed is
// sealed after them, never passed over: the sealer only takes events from
// transactions below every running one.
func TestSealAuditNeverPassesOverALateCommit(t *testing.T) {
	ctx := context.Background()
	pool, s := chainStore(t, 4)
	l1, l2 := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()

	late, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = late.Rollback(ctx) }()
	insertAudit(t, func(ctx context.Context, sql string, args ...any) error {
		_, err := late.Exec(ctx, sql, args...)
		return err
	}, l1, 1)
	insertAudit(t, poolExec(pool), l1, 2)
	insertAudit(t, poolExec(pool), l2, 1)

	n, err := s.SealAudit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("sealed %d events while an earlier transaction was open; they would have skipped it", n)
	}
	if lag, err := s.AuditSealLag(ctx); err != nil || lag == 0 {
		t.Fatalf("lag %v, %v: want above 0 with events waiting", lag, err)
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sealAll(t, s); n != 3 {
		t.Fatalf("sealed %d, want 3", n)
	}
	checkChain(t, s, l1, 2)
	checkChain(t, s, l2, 1)
	// The late event is first in its link's chain: it was written first.
	var first int
	if err := pool.QueryRow(ctx, `SELECT (a.data->>'n')::int FROM audit_seals s JOIN audit_events a ON a.id = s.event_id
		WHERE s.link_id = $1 AND s.seq = 1`, l1).Scan(&first); err != nil || first != 1 {
		t.Fatalf("seq 1 of the late link is event %d (%v), want 1", first, err)
	}
}

// Reapers sealing at once while events pour in: every event is sealed
// exactly once, every chain is whole.
func TestSealAuditConcurrentSealersAndWriters(t *testing.T) {
	ctx := context.Background()
	pool, s := chainStore(t, 16)
	links := make([]string, 20)
	for i := range links {
		links[i] = uuid.Must(uuid.NewV7()).String()
	}
	const writers, perWriter = 6, 150
	var wg sync.WaitGroup
	stop := make(chan struct{})
	sealed := make(chan int, 3)
	// Writers go on past perWriter until a sealer has sealed something
	// while they write: on a busy server other sessions' transactions can
	// hold the horizon back for seconds, and the race must happen.
	var sealedSoFar, written atomic.Int64
	deadline := time.Now().Add(30 * time.Second)
	for range 3 {
		go func() {
			total := 0
			for {
				select {
				case <-stop:
					sealed <- total
					return
				default:
				}
				n, err := s.SealAudit(ctx, 37)
				if err != nil {
					t.Error(err)
				}
				total += n
				sealedSoFar.Add(int64(n))
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter || (sealedSoFar.Load() == 0 && time.Now().Before(deadline)); i++ {
				// Some transactions write several events, as the sweeps do.
				tx, err := pool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				k := 1 + i%3
				for j := range k {
					if _, err := tx.Exec(ctx, `INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
						VALUES ($1, $2, $3, 'link.opened', now(), '{"type":"system"}', '{}')`,
						uuid.Must(uuid.NewV7()).String(), chainOwner, links[(w*7+i+j)%len(links)]); err != nil {
						t.Error(err)
					}
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
				}
				written.Add(int64(k))
			}
		}()
	}
	wg.Wait()
	close(stop)
	during := <-sealed + <-sealed + <-sealed
	rest := sealAll(t, s)
	var events, seals, distinct int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM audit_events), (SELECT count(*) FROM audit_seals),
		(SELECT count(DISTINCT event_id) FROM audit_seals)`).Scan(&events, &seals, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := int(written.Load()); events != want || events < writers*perWriter*2 || seals != events || distinct != events || during+rest != events {
		t.Fatalf("events %d (want %d), seals %d, distinct %d, sealed by the calls %d+%d", events, want, seals, distinct, during, rest)
	}
	if during == 0 {
		t.Fatal("nothing was sealed in 30 s of writes: the test did not race them")
	}
	for _, l := range links {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE link_id = $1`, l).Scan(&n); err != nil {
			t.Fatal(err)
		}
		checkChain(t, s, l, n)
	}
	t.Log(fmt.Sprintf("sealed %d during the writes, %d after", during, rest))
}

// seedAudit bulk-inserts n recorded events spread over links links.
func seedAudit(b *testing.B, pool *pgxpool.Pool, n, links int) []string {
	b.Helper()
	var ids []string
	err := pool.QueryRow(context.Background(), `
		WITH l AS (SELECT array_agg(sharelinks_uuid_v7()) AS ids FROM generate_series(1, $2)),
		ins AS (
			INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
			SELECT sharelinks_uuid_v7(), $3, l.ids[1 + g % $2], 'link.opened', now(),
				'{"type":"recipient","ip":"192.0.2.1","user_agent":"Mozilla/5.0"}',
				jsonb_build_object('target_id', 'report.pdf', 'grant_id', gen_random_uuid())
			FROM l, generate_series(1, $1) g
		)
		SELECT ids::text[] FROM l`, n, links, chainOwner).Scan(&ids)
	if err != nil {
		b.Fatal(err)
	}
	return ids
}

// BenchmarkSealAudit: events sealed per second, 5,000 a statement as the
// reaper runs it, spread over 1,000 links.
func BenchmarkSealAudit(b *testing.B) {
	ctx := context.Background()
	pool, s := chainStore(b, 4)
	seedAudit(b, pool, b.N, 1000)
	b.ResetTimer()
	total := 0
	for total < b.N {
		n, err := s.SealAudit(ctx, 5000)
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAuditExportRead: reading one link's sealed chain as the export
// does, in entries per second.
func BenchmarkAuditExportRead(b *testing.B) {
	ctx := context.Background()
	pool, s := chainStore(b, 4)
	const n = 200_000
	link := seedAudit(b, pool, n, 1)[0]
	for total := 0; total < n; {
		k, err := s.SealAudit(ctx, 5000)
		if err != nil {
			b.Fatal(err)
		}
		total += k
	}
	b.ResetTimer()
	entries := 0
	for range b.N {
		err := s.AuditChain(ctx, chainOwner, link, func(evidence.Head, int64) error { return nil },
			func(evidence.Entry) error { entries++; return nil })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}
