package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/sharelinks/sharelinks/internal/events"
)

// eventText builds an event envelope in SQL for set-wise writes; it must
// match events.Event (the schema tests check what is published). Plain
// concatenation rather than json_build_object: every value is a uuid, a
// timestamp, a fixed word or JSON marshalled by Go, so nothing needs
// escaping, and it is several times cheaper per row when a million links
// expire at once. The arguments are SQL for the type, the data and the
// actor; eventSQL is one outbox payload, sweepEvents a batch's.
const eventText = `'{"id":"' || e.id || '","type":"' || %[1]s || '","version":1,"occurred_at":"' ||
	to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') ||
	'","owner_id":"' || e.owner_id || '","link_id":"' || e.link_id ||
	'","actor":' || %[3]s || ',"data":' || %[2]s || '}'`

// eventSQL is eventText as an outbox payload.
const eventSQL = `convert_to(` + eventText + `, 'UTF8')`

// systemEvent is eventSQL for an event the service itself causes.
func systemEvent(typ, data string) string {
	return fmt.Sprintf(eventSQL, "'"+typ+"'", data, `'{"type":"system"}'`)
}

// sweepEvents is the tail of a sweep statement whose CTE "swept" returns
// (link_id, owner_id) for each link it changed: it gives each link an
// event of type typ and writes, in the same statement:
//   - one outbox row for the whole batch, a JSON array of the events that
//     the relay publishes as one message per element. A sweep of thousands
//     of links then writes, locks and deletes one outbox row instead of
//     thousands. Elements are separated by ",\n" (events.SplitSweep reads
//     that framing without a JSON parser; an event's text never holds a
//     raw newline);
//   - the audit rows, and a delivery per event and subscribed webhook
//     (the dispatcher's poll finds them), set-wise: a burst costs one
//     insert per table.
//
// $2 must be the outbox subject. The statement returns the count.
func sweepEvents(typ string) string {
	body := fmt.Sprintf(eventText, "'"+typ+"'", "'{}'", `'{"type":"system"}'`)
	return `, e AS (
			SELECT sharelinks_uuid_v7() AS id, link_id, owner_id FROM swept
		), ev AS (
			SELECT e.*, ` + body + ` AS body FROM e
		), ob AS (
			INSERT INTO outbox (id, subject, payload)
			SELECT sharelinks_uuid_v7(), $2, convert_to('[' || string_agg(body, E',\n' ORDER BY id) || ']', 'UTF8')
			FROM ev HAVING count(*) > 0
		), au AS (
			INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
			SELECT id, owner_id, link_id, '` + typ + `', statement_timestamp(), '{"type":"system"}', '{}' FROM e
		), wh AS (
			INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload)
			SELECT sharelinks_uuid_v7(), w.id, ev.id, '` + typ + `', convert_to(ev.body, 'UTF8')
			FROM ev JOIN webhooks w ON w.owner_id = ev.owner_id AND w.deleted_at IS NULL AND '` + typ + `' = ANY (w.events)
		)
		SELECT count(*) FROM swept`
}

// ExpireDue marks up to batch active links past their expiry as expired,
// with one link.expired event each (see sweepEvents), in one statement.
// Rows are claimed with SKIP LOCKED, so concurrent reapers take disjoint
// batches and a link is expired (and its event written) exactly once.
func (s *Store) ExpireDue(ctx context.Context, batch int) (int, error) {
	q := `
		WITH swept AS (
			-- id = ANY(ARRAY(subquery)) keeps the plan on the primary key; the
			-- IN/join forms turn into a sequential scan per batch at this size.
			UPDATE links SET status = 'expired', ended_at = now(), updated_at = now()
			WHERE id = ANY(ARRAY(
				SELECT id FROM links
				WHERE status = 'active' AND expires_at <= now()
				ORDER BY expires_at
				LIMIT $1
				FOR UPDATE SKIP LOCKED))
			RETURNING id AS link_id, owner_id
		)` + sweepEvents(events.LinkExpired)
	var n int
	if err := s.pool.QueryRow(ctx, q, batch, events.SubjectPrefix+events.LinkExpired).Scan(&n); err != nil {
		return 0, fmt.Errorf("expire links: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// ExpireChallenges marks open OTP challenges past their time expired.
func (s *Store) ExpireChallenges(ctx context.Context, batch int) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE otp_challenges SET status = 'expired', updated_at = now()
		WHERE id = ANY(ARRAY(SELECT id FROM otp_challenges WHERE status IN ('pending', 'sent') AND expires_at <= now()
			LIMIT $1 FOR UPDATE SKIP LOCKED))`, batch)
	if err != nil {
		return 0, fmt.Errorf("expire challenges: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// ChallengeKeep is how long a challenge is kept after it expires: past the
// hour every code-request throttle counts back over, it serves nothing
// (its events stay in the audit trail), and the recipient's address in it
// should not outlive its use.
const ChallengeKeep = time.Hour

// DeleteOldChallenges removes OTP challenges that expired more than
// ChallengeKeep ago, oldest first: ordered, the plan walks the expiry
// index whatever the statistics say (as deleteExpiredSessionsSQL).
func (s *Store) DeleteOldChallenges(ctx context.Context, batch int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM otp_challenges
		WHERE id = ANY(ARRAY(SELECT id FROM otp_challenges WHERE expires_at < now() - $2 * interval '1 second'
			ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED))`, batch, ChallengeKeep.Seconds())
	if err != nil {
		return 0, fmt.Errorf("delete old challenges: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// deleteExpiredSessionsSQL is DeleteExpiredSessions' statement. The
// ORDER BY makes the plan walk the expiry index from its start whatever
// the table's statistics say: without it, on a table not analysed yet, it
// scanned every session each round to find none expired (26 ms at 45,000
// sessions, BENCHMARKS.md, session 18).
const deleteExpiredSessionsSQL = `DELETE FROM access_sessions
	WHERE id = ANY(ARRAY(SELECT id FROM access_sessions WHERE expires_at <= now()
		ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED))`

// DeleteExpiredSessions removes recipient sessions past their time.
func (s *Store) DeleteExpiredSessions(ctx context.Context, batch int) (int, error) {
	tag, err := s.pool.Exec(ctx, deleteExpiredSessionsSQL, batch)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// PurgeEnded deletes links that ended more than retention ago, with their
// rows (their sessions here, the rest by cascade), writing link.purged for
// each (see sweepEvents).
func (s *Store) PurgeEnded(ctx context.Context, retention time.Duration, batch int) (int, error) {
	q := `
		WITH swept AS (
			DELETE FROM links WHERE id = ANY(ARRAY(
				SELECT id FROM links WHERE ended_at IS NOT NULL AND ended_at < now() - $3 * interval '1 second'
				LIMIT $1 FOR UPDATE SKIP LOCKED))
			RETURNING id AS link_id, owner_id
		), sessions AS (
			-- Sessions have no foreign key (migration 006): the purge ends them.
			DELETE FROM access_sessions WHERE link_id IN (SELECT link_id FROM swept)
		)` + sweepEvents(events.LinkPurged)
	var n int
	if err := s.pool.QueryRow(ctx, q, batch, events.SubjectPrefix+events.LinkPurged, retention.Seconds()).Scan(&n); err != nil {
		return 0, fmt.Errorf("purge links: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// staleOutboxSQL is StaleOutbox's query. It walks the key index in id
// order (ids are UUIDv7, so oldest first) and stops after $2 rows: a count
// over the whole table scanned every row the relay had deleted and no
// vacuum had removed yet, once a round (264 ms at 58,000 dead rows,
// BENCHMARKS.md, session 18).
const staleOutboxSQL = `SELECT count(*) FROM (SELECT created_at FROM outbox ORDER BY id LIMIT $2) o
	WHERE created_at < now() - $1 * interval '1 second'`

// StaleOutbox counts rows unpublished for longer than age among the
// oldest staleOutboxCap: the relay will take them, and the count is the
// repair metric (a row may hold a sweep's many events).
func (s *Store) StaleOutbox(ctx context.Context, age time.Duration) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, staleOutboxSQL, age.Seconds(), staleOutboxCap).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count stale outbox rows: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// staleOutboxCap bounds StaleOutbox's walk.
const staleOutboxCap = 10_000

// reemitted continues a WITH whose CTE "stuck" returns the rows to re-emit
// an event of type typ for (with link_id and owner_id; data builds the
// event's data from them as e.*): each gets a new event id, its outbox row
// (subject is the argument holding the subject) and its record
// (recordEventsSQL). The statement returns how many, and then the values
// of more, each an SQL expression.
func reemitted(subject, typ, data string, more ...string) string {
	cols := "(SELECT count(*) FROM ev)"
	for _, m := range more {
		cols += ", " + m
	}
	return `, e AS (
			SELECT sharelinks_uuid_v7() AS id, * FROM stuck
		), ev AS (
			INSERT INTO outbox (id, subject, payload)
			SELECT e.id, ` + subject + `, ` + systemEvent(typ, data) + ` FROM e
			RETURNING payload
		)` + recordEventsSQL + `
		SELECT ` + cols
}

// ReemitStuckNotifications writes a fresh notification.requested event for
// queued notifications whose event was lost in transport: never attempted
// after fresh; still queued fresh after they were next due (a scheduled
// retry's delay, a dead notifier's lease, or an earlier re-emit); or
// untouched for longer than stale (which must exceed the longest retry
// delay: rows from before retry_at existed). A re-emitted row is due
// again at once, so one whose new event is lost too is re-emitted after
// fresh once more. The consumer's claim makes a duplicate harmless.
func (s *Store) ReemitStuckNotifications(ctx context.Context, fresh, stale time.Duration, batch int) (int, error) {
	q := `
		WITH stuck AS (
			UPDATE notifications SET updated_at = now(), retry_at = now()
			WHERE id IN (
				SELECT id FROM notifications
				WHERE status = 'queued' AND (claimed_until IS NULL OR claimed_until < now())
				AND ((attempts = 0 AND updated_at < now() - $1 * interval '1 second')
					OR coalesce(retry_at, claimed_until) < now() - $1 * interval '1 second'
					OR updated_at < now() - $2 * interval '1 second')
				LIMIT $3 FOR UPDATE SKIP LOCKED)
			RETURNING id AS notification_id, link_id, owner_id, channel
		)` + reemitted("$4", events.NotificationRequested,
		`'{"notification_id":"' || e.notification_id || '","channel":"' || e.channel || '"}'`)
	var n int
	err := s.pool.QueryRow(ctx, q, fresh.Seconds(), stale.Seconds(), batch, events.SubjectPrefix+events.NotificationRequested).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("re-emit notifications: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// ReemitStuckChallenges does the same for code requests never attempted.
// A pending challenge has never been sent (sending sets sent_at), so the
// partial index otp_challenges_unsent (migration 018) finds them: without
// it every round scanned every challenge not yet expired (70 ms at 42,000
// challenges, BENCHMARKS.md, session 18).
func (s *Store) ReemitStuckChallenges(ctx context.Context, fresh time.Duration, batch int) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, reemitChallengesSQL, fresh.Seconds(), batch, events.SubjectPrefix+events.OTPRequested).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("re-emit challenges: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// reemitChallengesSQL is ReemitStuckChallenges' statement.
var reemitChallengesSQL = `
		WITH stuck AS (
			UPDATE otp_challenges c SET updated_at = now()
			FROM links l
			WHERE l.id = c.link_id AND c.id IN (
				SELECT id FROM otp_challenges
				WHERE sent_at IS NULL AND status = 'pending' AND expires_at > now() AND (claimed_until IS NULL OR claimed_until < now())
				AND updated_at < now() - $1 * interval '1 second'
				LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING c.id AS challenge_id, c.link_id, l.owner_id, c.channel
		)` + reemitted("$3", events.OTPRequested,
	`'{"challenge_id":"' || e.challenge_id || '","channel":"' || e.channel || '"}'`)

// RemindUnopened takes up to batch notifications whose reminder is due
// (each once: remind_at is cleared) and, for each link still active and
// never opened, queues one reminder to each recipient that the first
// message reached, with its notification.requested event, in one
// statement. It returns how many notifications it took (the sweep loops
// while batches come back full) and how many reminders it queued.
func (s *Store) RemindUnopened(ctx context.Context, batch int) (taken, reminded int, err error) {
	q := `
		WITH due AS (
			UPDATE notifications SET remind_at = NULL
			WHERE id IN (SELECT n.id FROM notifications n JOIN links l ON l.id = n.link_id
				-- A link that has not opened yet (not_before) keeps its
				-- reminder due until it does: "you have not opened this"
				-- would be no news before anyone could.
				WHERE n.remind_at <= now() AND (l.not_before IS NULL OR l.not_before <= now())
				ORDER BY n.remind_at LIMIT $1 FOR UPDATE OF n SKIP LOCKED)
			RETURNING owner_id, link_id, channel, recipient, status
		), picked AS (
			SELECT DISTINCT ON (d.link_id, d.recipient) d.owner_id, d.link_id, d.channel, d.recipient
			FROM due d JOIN links l ON l.id = d.link_id
			WHERE d.status = 'sent' AND l.status = 'active' AND l.expires_at > now() AND l.access_count = 0
		), stuck AS (
			INSERT INTO notifications (id, owner_id, link_id, channel, recipient, kind)
			SELECT sharelinks_uuid_v7(), owner_id, link_id, channel, recipient, 'reminder' FROM picked
			ON CONFLICT (link_id, recipient) WHERE kind = 'reminder' DO NOTHING
			RETURNING id AS notification_id, link_id, owner_id, channel
		)` + reemitted("$2", events.NotificationRequested,
		`'{"notification_id":"' || e.notification_id || '","channel":"' || e.channel || '"}'`, "(SELECT count(*) FROM due)")
	if err := s.pool.QueryRow(ctx, q, batch, events.SubjectPrefix+events.NotificationRequested).Scan(&reminded, &taken); err != nil {
		return 0, 0, fmt.Errorf("remind unopened links: %w", err)
	}
	if reminded > 0 {
		s.wake()
	}
	return taken, reminded, nil
}
