package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// Migration 018 moves a code's attempts and its use from the challenge to
// the link: codes out when it runs keep both (a link points at its newest
// challenge only), and undoing it puts them back.
func TestMigration018KeepsCodesOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testkit.Database(t)
	if err := postgres.MigrateTo(ctx, dsn, 17); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const (
		owner    = "00000000-0000-0000-0000-00000000000a"
		guessed  = "00000000-0000-0000-0000-000000000001" // newest challenge: 3 wrong codes
		older    = "00000000-0000-0000-0000-000000000002" // superseded, 4 wrong codes
		used     = "00000000-0000-0000-0000-000000000003" // newest of another link: verified
		linkA    = "00000000-0000-0000-0000-0000000000a1"
		linkB    = "00000000-0000-0000-0000-0000000000b1"
		linkNone = "00000000-0000-0000-0000-0000000000c1" // never asked for a code
	)
	if _, err := conn.Exec(ctx, `
		INSERT INTO owners (id, name) VALUES ('`+owner+`', 'o');
		INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, recipient, targets, expires_at)
		SELECT id::uuid, '`+owner+`', decode(md5(id), 'hex'), '\x00', 'view', 'sms_otp', '+15555550100', '[]', now() + interval '1 day'
		FROM unnest(ARRAY['`+linkA+`', '`+linkB+`', '`+linkNone+`']) AS id;
		INSERT INTO otp_challenges (id, link_id, channel, recipient, status, wrong_codes, created_at, expires_at) VALUES
			('`+older+`', '`+linkA+`', 'sms', '+15555550100', 'expired', 4, now() - interval '2 minutes', now() + interval '5 minutes'),
			('`+guessed+`', '`+linkA+`', 'sms', '+15555550100', 'sent', 3, now() - interval '1 minute', now() + interval '5 minutes'),
			('`+used+`', '`+linkB+`', 'sms', '+15555550100', 'verified', 1, now(), now() + interval '5 minutes')`); err != nil {
		t.Fatal(err)
	}
	if err := postgres.MigrateTo(ctx, dsn, 18); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		challenge *string
		tries     int
		used      bool
	}{linkA: {ptr(guessed), 3, false}, linkB: {ptr(used), 1, true}, linkNone: {nil, 0, false}}
	for id, w := range want {
		var ch *string
		var tries int
		var isUsed bool
		if err := conn.QueryRow(ctx, `SELECT code_challenge::text, code_tries, code_used FROM links WHERE id = $1`, id).
			Scan(&ch, &tries, &isUsed); err != nil {
			t.Fatal(err)
		}
		if (ch == nil) != (w.challenge == nil) || (ch != nil && *ch != *w.challenge) || tries != w.tries || isUsed != w.used {
			t.Errorf("link %s after 018: challenge %v, %d tries, used %v; want %v, %d, %v", id, deref(ch), tries, isUsed, deref(w.challenge), w.tries, w.used)
		}
	}

	// A code charged and used since, then undone: the challenge the link
	// names says so. A superseded one's count could never matter again and
	// is not kept.
	if _, err := conn.Exec(ctx, `UPDATE links SET code_tries = 4, code_used = true WHERE id = '`+linkA+`'`); err != nil {
		t.Fatal(err)
	}
	if err := postgres.MigrateTo(ctx, dsn, 17); err != nil {
		t.Fatal(err)
	}
	for id, w := range map[string]struct {
		status string
		wrong  int
	}{guessed: {"verified", 4}, older: {"expired", 0}, used: {"verified", 1}} {
		var status string
		var wrong int
		if err := conn.QueryRow(ctx, `SELECT status, wrong_codes FROM otp_challenges WHERE id = $1`, id).Scan(&status, &wrong); err != nil {
			t.Fatal(err)
		}
		if status != w.status || wrong != w.wrong {
			t.Errorf("challenge %s after undoing 018: %s, %d wrong; want %s, %d", id, status, wrong, w.status, w.wrong)
		}
	}
}

func ptr(s string) *string { return &s }

func deref(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}
