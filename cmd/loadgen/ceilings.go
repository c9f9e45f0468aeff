package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/password"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
)

// The ceilings run the service's own SQL straight through pgx, with the
// same pool size the api uses (16), so "service / ceiling" is the cost of
// everything the service adds: HTTP, JSON, auth lookup, Go code, relay.
// Events go to bench_outbox (outbox's shape and indexes, no relay).

// insertLinkSQL is what postgres.Store.InsertLinks queues per link.
const insertLinkSQL = `INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, recipient,
	password_hash, targets, expires_at, max_access_count, title, message)
	VALUES ($1, $2, $3, $4, $5, $6, nullif($7, ''), nullif($8, ''), $9, $10, $11, $12, $13)`

// bareAccessSQL is the conditional access count alone (the brief's form).
const bareAccessSQL = `UPDATE links SET access_count = access_count + 1
	WHERE id = $1 AND status = 'active' AND expires_at > now()
	AND (max_access_count IS NULL OR access_count < max_access_count)
	RETURNING access_count`

// accessSetSQL is what the service sets when it counts an access: its own
// clause, so the ceilings cannot drift from it.
const accessSetSQL = postgres.CountAccessSet

// serviceAccessSQL is the UPDATE postgres.Store.Access runs.
const serviceAccessSQL = `UPDATE links SET ` + accessSetSQL + `
	WHERE id = $1 AND status = 'active' AND expires_at > now()
		AND (max_access_count IS NULL OR access_count < max_access_count)
	RETURNING access_count, status`

// expireClaimSQL is the expiry both (d) forms share: the claimed links
// marked expired (e: one new event id per link).
const expireClaimSQL = `
	WITH expired AS (
		UPDATE links l SET status = 'expired', ended_at = now(), updated_at = now()
		WHERE l.id = ANY(ARRAY(
			SELECT id FROM links
			WHERE status = 'active' AND expires_at <= $3
			ORDER BY expires_at
			LIMIT $1
			FOR UPDATE SKIP LOCKED))
		RETURNING l.id AS link_id, l.owner_id
	), e AS (
		SELECT sharelinks_uuid_v7() AS id, link_id, owner_id FROM expired
	)`

// expireCeilingSQL is the reaper's expiry with one outbox row per link,
// in the form that makes Postgres look each claimed row up by primary key
// (id = ANY(ARRAY(...))) whatever the table size, with a cut-off instead
// of now() (so it can run on links not yet due) and bench_outbox instead
// of outbox.
const expireCeilingSQL = expireClaimSQL + `
	INSERT INTO bench_outbox (id, subject, payload)
	SELECT e.id, $2, convert_to(json_build_object(
		'id', e.id, 'type', 'link.expired', 'version', 1,
		'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'owner_id', e.owner_id, 'link_id', e.link_id,
		'actor', json_build_object('type', 'system'), 'data', json_build_object())::text, 'UTF8')
	FROM e`

// expireBatchCeilingSQL is (d) in the form the service uses: the same
// expiry, with one outbox row per batch holding the batch's events as a
// JSON array (postgres.Store.ExpireDue), built by concatenation as there.
const expireBatchCeilingSQL = expireClaimSQL + `, ev AS (
		INSERT INTO bench_outbox (id, subject, payload)
		SELECT sharelinks_uuid_v7(), $2, convert_to('[' || string_agg('{"id":"' || e.id ||
			'","type":"link.expired","version":1,"occurred_at":"' ||
			to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') ||
			'","owner_id":"' || e.owner_id || '","link_id":"' || e.link_id ||
			'","actor":{"type":"system"},"data":{}}', E',\n' ORDER BY e.id) || ']', 'UTF8')
		FROM e HAVING count(*) > 0
	)
	SELECT count(*) FROM expired`

// verifyOneStatementSQL is everything a successful verify commits (the
// access count, the session, the link.verified event built in SQL) as one
// statement: one round trip, and the row lock is held only while it runs.
const verifyOneStatementSQL = `
	WITH upd AS (
		UPDATE links SET ` + accessSetSQL + `
		WHERE id = $1 AND status = 'active' AND expires_at > now()
			AND (max_access_count IS NULL OR access_count < max_access_count)
		RETURNING id, owner_id, access_count, status
	), s AS (
		INSERT INTO access_sessions (id, link_id, token_hash, expires_at)
		SELECT $2, id, $3, $4 FROM upd
	), e AS (
		INSERT INTO bench_outbox (id, subject, payload)
		SELECT $5, 'sharelinks.events.link.verified', convert_to(json_build_object(
			'id', $5::uuid, 'type', 'link.verified', 'version', 1,
			'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
			'owner_id', owner_id, 'link_id', id, 'actor', $6::jsonb,
			'data', json_build_object('access_count', access_count, 'session_id', $2::uuid))::text, 'UTF8')
		FROM upd
	)
	SELECT access_count, status FROM upd`

// recipientActor is the actor the service records for the load
// generator's recipient requests (loopback, Go's client), so the
// ceilings' events are the same size as the service's.
var recipientActor = events.Actor{Type: "recipient", IP: "127.0.0.1", UserAgent: "Go-http-client/1.1"}

// ceilingCreate is (a): one transaction inserting a link row and its
// link.created outbox row. Explicit (BEGIN, both inserts, COMMIT: the
// brief's and perf-baseline.md's form) or pipelined (both inserts in one
// implicit transaction and one round trip: exactly how
// postgres.Store.InsertLinks sends them).
func (b *bench) ceilingCreate(ctx context.Context, conc int, dur time.Duration, pipelined bool) result {
	owner := b.st.ownerID
	keys := b.st.keys
	exp := time.Now().Add(30 * 24 * time.Hour).UTC()
	targets := []byte(benchTargets)
	actor := events.Actor{Type: "owner", KeyPrefix: b.st.apiKey[:12]}
	return runClosed(ctx, conc, dur, func(ctx context.Context, _ int) error {
		id := uuid.Must(uuid.NewV7()).String()
		tok := secret.NewToken("")
		ev := events.Must(events.LinkCreated, owner, id, actor, events.CreatedData{
			LinkType: "view", AuthType: link.AuthNone, ExpiresAt: exp, TargetCount: 1})
		payload, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		batch := &pgx.Batch{}
		batch.Queue(insertLinkSQL, id, owner, keys.LookupHash(tok), keys.Seal([]byte(tok), []byte(id)),
			"view", link.AuthNone, "", "", targets, exp, nil, "", "")
		batch.Queue(`INSERT INTO bench_outbox (id, subject, payload) VALUES ($1, $2, $3)`, ev.ID, ev.Subject(), payload)
		if pipelined {
			return b.ceilPool.SendBatch(ctx, batch).Close()
		}
		return pgx.BeginFunc(ctx, b.ceilPool, func(tx pgx.Tx) error {
			return tx.SendBatch(ctx, batch).Close()
		})
	})
}

// ceilingBareAccess is (b) bare: the conditional UPDATE alone, on one hot
// link (ids of length 1) or on random links among ids.
func (b *bench) ceilingBareAccess(ctx context.Context, conc int, dur time.Duration, ids []string) result {
	return runClosed(ctx, conc, dur, func(ctx context.Context, _ int) error {
		var n int
		return b.ceilPool.QueryRow(ctx, bareAccessSQL, ids[mrand.IntN(len(ids))]).Scan(&n)
	})
}

// ceilingVerifyTx is (b) full: what a successful verify commits: the
// service's UPDATE, a session row and a link.verified outbox row.
func (b *bench) ceilingVerifyTx(ctx context.Context, conc int, dur time.Duration, ids []string) result {
	owner := b.st.ownerID
	keys := b.st.keys
	return runClosed(ctx, conc, dur, func(ctx context.Context, _ int) error {
		id := ids[mrand.IntN(len(ids))]
		sessID := uuid.Must(uuid.NewV7()).String()
		sessHash := keys.LookupHash(secret.NewToken(link.SessionTokenPrefix))
		return pgx.BeginFunc(ctx, b.ceilPool, func(tx pgx.Tx) error {
			var n int
			var st string
			if err := tx.QueryRow(ctx, serviceAccessSQL, id).Scan(&n, &st); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO access_sessions (id, link_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)`,
				sessID, id, sessHash, time.Now().Add(30*time.Minute)); err != nil {
				return err
			}
			ev := events.Must(events.LinkVerified, owner, id, recipientActor, events.VerifiedData{AccessCount: n, SessionID: sessID})
			payload, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO bench_outbox (id, subject, payload) VALUES ($1, $2, $3)`, ev.ID, ev.Subject(), payload)
			return err
		})
	})
}

// ceilingVerifyOne is (b) in one statement: verifyOneStatementSQL.
func (b *bench) ceilingVerifyOne(ctx context.Context, conc int, dur time.Duration, ids []string) result {
	keys := b.st.keys
	actor, err := json.Marshal(recipientActor)
	if err != nil {
		return result{failed: 1, firstErr: err}
	}
	return runClosed(ctx, conc, dur, func(ctx context.Context, _ int) error {
		var n int
		var st string
		return b.ceilPool.QueryRow(ctx, verifyOneStatementSQL, ids[mrand.IntN(len(ids))],
			uuid.Must(uuid.NewV7()), keys.LookupHash(secret.NewToken(link.SessionTokenPrefix)),
			time.Now().Add(30*time.Minute), uuid.Must(uuid.NewV7()), actor).Scan(&n, &st)
	})
}

// ceilingCode is (b) for a code verify: the one statement the service
// sends for one (postgres.AttemptCodeQuery: the link found by token hash,
// its challenge charged and used up, the access counted, the session and
// the events written), with the service's arguments, straight through
// pgx, one autocommit statement each. Each of links is used once, taken
// in turn through next across interleaved rounds; a round stops early
// when they run out.
func (b *bench) ceilingCode(ctx context.Context, conc int, dur time.Duration, links []codeLink, next *atomic.Int64) result {
	keys := b.st.keys
	stop := time.Now().Add(dur)
	return runWorkers(ctx, conc, func(ctx context.Context, _ int) (bool, error) {
		if time.Now().After(stop) {
			return false, nil
		}
		i := int(next.Add(1)) - 1
		if i >= len(links) {
			return false, nil
		}
		th := keys.LookupHash(links[i].token)
		sess := &link.Session{ID: uuid.Must(uuid.NewV7()).String(),
			TokenHash: keys.LookupHash(secret.NewToken(link.SessionTokenPrefix)), ExpiresAt: time.Now().Add(30 * time.Minute)}
		sql, args, err := postgres.AttemptCodeQuery(link.CodeAttempt{TokenHash: th, CodeHash: keys.CodeHash(th, links[i].code),
			Blind: secret.NewBlind(), CodeLength: len(links[i].code), Session: sess, Actor: recipientActor})
		if err != nil {
			return true, err
		}
		last, _, err := b.queryLast(ctx, sql, args)
		if err != nil {
			return true, err
		}
		if counted, _ := last.(bool); !counted {
			return true, errors.New("code verify ceiling: the access was not counted")
		}
		return true, nil
	})
}

// ceilingOpen is (b) for an open: the one statement the service sends
// for one (postgres.OpenQuery), with the service's arguments, straight
// through pgx, on random pairs of link token and access token that
// verifies returned.
func (b *bench) ceilingOpen(ctx context.Context, conc int, dur time.Duration, pairs []accessPair) result {
	keys := b.st.keys
	return runClosed(ctx, conc, dur, func(ctx context.Context, _ int) error {
		p := pairs[mrand.IntN(len(pairs))]
		sql, args, err := postgres.OpenQuery(keys.LookupHash(p.token), keys.LookupHash(p.access), "",
			uuid.Must(uuid.NewV7()).String(), recipientActor)
		if err != nil {
			return err
		}
		_, n, err := b.queryLast(ctx, sql, args)
		if err != nil {
			return err
		}
		if n != 1 {
			return errors.New("open ceiling: the session did not open its link")
		}
		return nil
	})
}

// queryLast runs a service statement through the ceiling pool, decoding
// every value of every row as the service's scan does, and returns the
// last row's last value and the number of rows.
func (b *bench) queryLast(ctx context.Context, sql string, args []any) (last any, n int, err error) {
	rows, err := b.ceilPool.Query(ctx, sql, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, n, err
		}
		last, n = vals[len(vals)-1], n+1
	}
	return last, n, rows.Err()
}

// ceilingExpire is (d): the reaper's batched SKIP LOCKED expiry, in
// batches of 5000, until limit rows are done or none is left before cut;
// with one outbox row per link (the brief's form), or per batch (the
// service's, (d')).
func (b *bench) ceilingExpire(ctx context.Context, cut time.Time, limit int, perBatch bool) (rows int, took time.Duration, err error) {
	start := time.Now()
	for ctx.Err() == nil && rows < limit {
		var n int
		if perBatch {
			err = b.ceilPool.QueryRow(ctx, expireBatchCeilingSQL, 5000, events.SubjectPrefix+events.LinkExpired, cut).Scan(&n)
		} else {
			var tag pgconn.CommandTag
			tag, err = b.ceilPool.Exec(ctx, expireCeilingSQL, 5000, events.SubjectPrefix+events.LinkExpired, cut)
			n = int(tag.RowsAffected())
		}
		if err != nil {
			return rows, time.Since(start), fmt.Errorf("expire ceiling: %w", err)
		}
		rows += n
		if n < 5000 {
			break
		}
	}
	return rows, time.Since(start), ctx.Err()
}

// ceilingArgon2 is (e): Argon2id hashes per second with the service's
// parameters and hasher, one goroutine per core, in this process.
func ceilingArgon2(ctx context.Context, dur time.Duration, workers int) result {
	h := password.NewHasher(password.Default, workers)
	return runClosed(ctx, workers, dur, func(ctx context.Context, _ int) error {
		_, err := h.Hash(ctx, "correct horse battery staple")
		return err
	})
}

// ceilingJetStream is (c): async publishes of 512-byte messages to a file
// stream on the same server, as fast as the acks come back.
func ceilingJetStream(ctx context.Context, url string, n int) (result, error) {
	nc, err := natsConnect(url)
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		return result{}, err
	}
	const name = "BENCH_CEILING"
	_ = js.DeleteStream(ctx, name)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"bench.ceiling.>"}, Storage: jetstream.FileStorage, Replicas: 1,
	}); err != nil {
		return result{}, fmt.Errorf("create stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	payload := make([]byte, 512)
	_, _ = rand.Read(payload)
	var (
		mu     sync.Mutex
		failed int
		first  error
	)
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if _, err := js.PublishAsync("bench.ceiling.msg", payload); err != nil {
			mu.Lock()
			failed++
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return result{}, fmt.Errorf("publish acks did not complete within 60s")
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	el := time.Since(start)
	info, err := js.Stream(ctx, name)
	stored := uint64(0)
	if err == nil {
		stored = info.CachedInfo().State.Msgs
	}
	return result{ok: int(stored), failed: n - int(stored), elapsed: el, firstErr: first}, nil
}

// briefSweep is the expiry measured in perf-baseline.md §2.7 exactly: its
// own table (the bare links of §2.2: three indexes, eight columns), the
// ANY form, one outbox row per link, batches of 5000, one worker. It is
// there because the reaper's target ("under 40 s; the bare SQL takes
// about 25 s here") was set against that figure, and this shared machine's
// speed moves between runs: the same SQL timed in the same run says what
// 25 s has become today.
var briefSweep = struct {
	setup           []string
	sweep, teardown string
}{
	setup: []string{
		`DROP TABLE IF EXISTS bench_brief_links, bench_brief_outbox`,
		`CREATE TABLE bench_brief_links (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner_id bigint, token text UNIQUE, status text,
			expires_at timestamptz, max_access_count int, access_count int, created_at timestamptz DEFAULT now())`,
		`CREATE INDEX bench_brief_links_status_expires_idx ON bench_brief_links (status, expires_at)`,
		`CREATE TABLE bench_brief_outbox (id bigserial PRIMARY KEY, subject text, payload jsonb,
			created_at timestamptz DEFAULT now(), published_at timestamptz)`,
		`INSERT INTO bench_brief_links (owner_id, token, status, expires_at, max_access_count, access_count, created_at)
			SELECT (i % 100000) + 1, md5('sweep' || i), 'active', now() - interval '1 hour' - (i % 86400) * interval '1 second',
				100, 0, now() - interval '8 days'
			FROM generate_series(1, $1::int) AS i`,
		`VACUUM (ANALYZE) bench_brief_links`,
		`CHECKPOINT`,
	},
	sweep: `WITH expired AS (
			UPDATE bench_brief_links SET status = 'expired' WHERE id = ANY(ARRAY(
				SELECT id FROM bench_brief_links WHERE status = 'active' AND expires_at < now()
				ORDER BY expires_at LIMIT 5000 FOR UPDATE SKIP LOCKED))
			RETURNING id, owner_id, token)
		INSERT INTO bench_brief_outbox (subject, payload)
		SELECT 'links.expired', jsonb_build_object('link_id', id, 'owner_id', owner_id, 'token', token) FROM expired`,
	teardown: `DROP TABLE IF EXISTS bench_brief_links, bench_brief_outbox`,
}

// ceilingBriefSweep runs briefSweep over n rows and returns the seconds a
// million would take at the rate measured.
func (b *bench) ceilingBriefSweep(ctx context.Context, n int) (perMillion float64, took time.Duration, err error) {
	defer func() { _, _ = b.ceilPool.Exec(context.WithoutCancel(ctx), briefSweep.teardown) }()
	for _, q := range briefSweep.setup {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, n)
		}
		if _, err := b.ceilPool.Exec(ctx, q, args...); err != nil && q != "CHECKPOINT" {
			return 0, 0, fmt.Errorf("brief sweep setup: %w", err)
		}
	}
	start := time.Now()
	rows := 0
	for ctx.Err() == nil {
		tag, err := b.ceilPool.Exec(ctx, briefSweep.sweep)
		if err != nil {
			return 0, 0, fmt.Errorf("brief sweep: %w", err)
		}
		rows += int(tag.RowsAffected())
		if tag.RowsAffected() < 5000 {
			break
		}
	}
	took = time.Since(start)
	if rows != n {
		return 0, took, fmt.Errorf("brief sweep expired %d of %d rows", rows, n)
	}
	return took.Seconds() * 1e6 / float64(n), took, ctx.Err()
}
