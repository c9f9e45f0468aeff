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
// actor; eventSQL is one outbox payload, systemEvents many.
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

// systemEvents aggregates the system events of every row of e into one
// outbox payload, a JSON array that the relay publishes as one message per
// element. A sweep of thousands of links then writes, locks and deletes
// one outbox row instead of thousands: most of the database's work per
// expired link when a million expire at once. Elements are separated by
// ",\n" (events.SplitSweep reads that framing without a JSON parser; an
// event's text never holds a raw newline).
func systemEvents(typ, data string) string {
	return `convert_to('[' || string_agg(` + fmt.Sprintf(eventText, "'"+typ+"'", data, `'{"type":"system"}'`) +
		`, E',\n' ORDER BY e.id) || ']', 'UTF8')`
}

// ExpireDue marks up to batch active links past their expiry as expired,
// with one link.expired event each (all in one outbox row), in one
// statement. Rows are claimed with SKIP LOCKED, so concurrent reapers take
// disjoint batches and a link is expired (and its event written) exactly
// once.
func (s *Store) ExpireDue(ctx context.Context, batch int) (int, error) {
	q := fmt.Sprintf(`
		WITH expired AS (
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
		), e AS (
			SELECT sharelinks_uuid_v7() AS id, link_id, owner_id FROM expired
		), ev AS (
			INSERT INTO outbox (id, subject, payload)
			SELECT sharelinks_uuid_v7(), $2, %s FROM e HAVING count(*) > 0
		)
		SELECT count(*) FROM expired`, systemEvents(events.LinkExpired, "'{}'"))
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

// DeleteExpiredSessions removes recipient sessions past their time.
func (s *Store) DeleteExpiredSessions(ctx context.Context, batch int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM access_sessions
		WHERE id = ANY(ARRAY(SELECT id FROM access_sessions WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED))`, batch)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// PurgeEnded deletes links that ended more than retention ago, with their
// rows (cascade), writing link.purged for each (all in one outbox row).
func (s *Store) PurgeEnded(ctx context.Context, retention time.Duration, batch int) (int, error) {
	q := fmt.Sprintf(`
		WITH gone AS (
			DELETE FROM links WHERE id = ANY(ARRAY(
				SELECT id FROM links WHERE ended_at IS NOT NULL AND ended_at < now() - $1 * interval '1 second'
				LIMIT $2 FOR UPDATE SKIP LOCKED))
			RETURNING id AS link_id, owner_id
		), e AS (
			SELECT sharelinks_uuid_v7() AS id, link_id, owner_id FROM gone
		), ev AS (
			INSERT INTO outbox (id, subject, payload)
			SELECT sharelinks_uuid_v7(), $3, %s FROM e HAVING count(*) > 0
		)
		SELECT count(*) FROM gone`, systemEvents(events.LinkPurged, "'{}'"))
	var n int
	if err := s.pool.QueryRow(ctx, q, retention.Seconds(), batch, events.SubjectPrefix+events.LinkPurged).Scan(&n); err != nil {
		return 0, fmt.Errorf("purge links: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// StaleOutbox counts rows unpublished for longer than age: the relay will
// take them, and the count is the repair metric (a row may hold a sweep's
// many events).
func (s *Store) StaleOutbox(ctx context.Context, age time.Duration) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM outbox
		WHERE created_at < now() - $1 * interval '1 second'`, age.Seconds()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count stale outbox rows: %w", err)
	}
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// ReemitStuckNotifications writes a fresh notification.requested event for
// queued notifications whose event was lost in transport: never attempted
// after fresh, or untouched for longer than stale (which must exceed the
// longest retry delay). The consumer's claim makes the duplicate harmless.
func (s *Store) ReemitStuckNotifications(ctx context.Context, fresh, stale time.Duration, batch int) (int, error) {
	q := fmt.Sprintf(`
		WITH stuck AS (
			UPDATE notifications SET updated_at = now()
			WHERE id IN (
				SELECT id FROM notifications
				WHERE status = 'queued' AND (claimed_until IS NULL OR claimed_until < now())
				AND ((attempts = 0 AND updated_at < now() - $1 * interval '1 second')
					OR updated_at < now() - $2 * interval '1 second')
				LIMIT $3 FOR UPDATE SKIP LOCKED)
			RETURNING id AS notification_id, link_id, owner_id, channel
		), e AS (
			SELECT sharelinks_uuid_v7() AS id, * FROM stuck
		)
		INSERT INTO outbox (id, subject, payload)
		SELECT e.id, $4, %s FROM e`, systemEvent(events.NotificationRequested,
		`'{"notification_id":"' || e.notification_id || '","channel":"' || e.channel || '"}'`))
	tag, err := s.pool.Exec(ctx, q, fresh.Seconds(), stale.Seconds(), batch, events.SubjectPrefix+events.NotificationRequested)
	if err != nil {
		return 0, fmt.Errorf("re-emit notifications: %w", err)
	}
	n := int(tag.RowsAffected())
	if n > 0 {
		s.wake()
	}
	return n, nil
}

// ReemitStuckChallenges does the same for code requests never attempted.
func (s *Store) ReemitStuckChallenges(ctx context.Context, fresh time.Duration, batch int) (int, error) {
	q := fmt.Sprintf(`
		WITH stuck AS (
			UPDATE otp_challenges c SET updated_at = now()
			FROM links l
			WHERE l.id = c.link_id AND c.id IN (
				SELECT id FROM otp_challenges
				WHERE status = 'pending' AND expires_at > now() AND (claimed_until IS NULL OR claimed_until < now())
				AND updated_at < now() - $1 * interval '1 second'
				LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING c.id AS challenge_id, c.link_id, l.owner_id, c.channel
		), e AS (
			SELECT sharelinks_uuid_v7() AS id, * FROM stuck
		)
		INSERT INTO outbox (id, subject, payload)
		SELECT e.id, $3, %s FROM e`, systemEvent(events.OTPRequested,
		`'{"challenge_id":"' || e.challenge_id || '","channel":"' || e.channel || '"}'`))
	tag, err := s.pool.Exec(ctx, q, fresh.Seconds(), batch, events.SubjectPrefix+events.OTPRequested)
	if err != nil {
		return 0, fmt.Errorf("re-emit challenges: %w", err)
	}
	n := int(tag.RowsAffected())
	if n > 0 {
		s.wake()
	}
	return n, nil
}
