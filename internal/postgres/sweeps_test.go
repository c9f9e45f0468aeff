package postgres_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/postgres"
)

// buffersTouched runs sql under EXPLAIN (ANALYZE, BUFFERS) in a
// transaction it rolls back, and returns the shared buffers the whole
// statement read or found in cache: the work it did, whatever the
// machine's speed.
func buffersTouched(t *testing.T, tx pgx.Tx, sql string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	if _, err := tx.Exec(ctx, `SAVEPOINT explain`); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT explain`); err != nil {
			t.Fatal(err)
		}
	}()
	var out []byte
	if err := tx.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+sql, args...).Scan(&out); err != nil {
		t.Fatalf("explain: %v\n%s", err, sql)
	}
	type node struct {
		Hit   int    `json:"Shared Hit Blocks"`
		Read  int    `json:"Shared Read Blocks"`
		Plans []node `json:"Plans"`
	}
	var plans []struct{ Plan node }
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain output %s: %v", out, err)
	}
	// A node's counts include its children's; the largest is the total.
	most := 0
	var walk func(n node)
	walk = func(n node) {
		most = max(most, n.Hit+n.Read)
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	return most
}

// TestReaperRoundsScaleWithWorkNotTables: the statements the reaper runs
// every round, on tables holding 50,000 rows none of which is due, touch
// a handful of buffers. (At 50,000, not 20,000, an unordered session
// delete is planned as a seq scan on a table with no statistics yet.) Each of them once scanned its whole table (or,
// for the seal lag, every audit event ever recorded) every round: 224 ms
// for the seal lag at 57,000 events during make bench (BENCHMARKS.md,
// session 18).
func TestReaperRoundsScaleWithWorkNotTables(t *testing.T) {
	ctx := context.Background()
	pool, store := chainStore(t, 4)
	const rows = "50000"
	const linkID = "0193a1c4-0000-7000-8000-0000000000bb"
	for _, q := range []string{
		`INSERT INTO owners (id, name) VALUES ('` + chainOwner + `', 'sweeps')`,
		`INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, recipient, targets, expires_at)
			VALUES ('` + linkID + `', '` + chainOwner + `', '\x01', '\x01', 'view', 'sms_otp', '+15555550100', '[]', now() + interval '1 day')`,
		// Recorded events, all of which are sealed below.
		`INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
			SELECT sharelinks_uuid_v7(), '` + chainOwner + `', '` + linkID + `', 'link.opened', now(), '{"type":"system"}', '{}'
			FROM generate_series(1, ` + rows + `)`,
		// Sessions still valid.
		`INSERT INTO access_sessions (id, link_id, token_hash, expires_at)
			SELECT gen_random_uuid(), '` + linkID + `', sha256(i::text::bytea), now() + interval '30 minutes'
			FROM generate_series(1, ` + rows + `) i`,
		// Codes sent and still valid, and one never sent: the one a round
		// has to find.
		`INSERT INTO otp_challenges (id, link_id, channel, recipient, status, code_hash, sent_at, expires_at)
			SELECT gen_random_uuid(), '` + linkID + `', 'sms', '+15555550100', 'sent', '\x02', now(), now() + interval '10 minutes'
			FROM generate_series(1, ` + rows + `)`,
		`INSERT INTO otp_challenges (id, link_id, channel, recipient, status, code_hash, expires_at, updated_at)
			VALUES (gen_random_uuid(), '` + linkID + `', 'sms', '+15555550100', 'pending', '\x02', now() + interval '10 minutes', now() - interval '1 hour')`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	sealAll(t, store) // until the lag reads 0

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	const most = 60
	for _, c := range []struct {
		name string
		sql  string
		args []any
	}{
		{"seal lag", postgres.AuditSealLagSQL, nil},
		{"expired sessions", postgres.DeleteExpiredSessionsSQL, []any{5000}},
		{"stuck codes", postgres.ReemitChallengesSQL, []any{30.0, 5000, events.SubjectPrefix + events.OTPRequested}},
	} {
		got := buffersTouched(t, tx, c.sql, c.args...)
		t.Logf("%s: %d buffers", c.name, got)
		if got > most {
			t.Errorf("%s: %d buffers touched with %s rows not due; want at most %d", c.name, got, rows, most)
		}
	}
	// The stuck code was found (so the bound above is not from finding nothing).
	var reemitted int
	if err := tx.QueryRow(ctx, postgres.ReemitChallengesSQL, 30.0, 5000, events.SubjectPrefix+events.OTPRequested).Scan(&reemitted); err != nil {
		t.Fatal(err)
	}
	if reemitted != 1 {
		t.Fatalf("re-emitted %d stuck codes, want 1", reemitted)
	}
}
