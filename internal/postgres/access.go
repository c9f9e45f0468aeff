package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

// ChargeVerifyAttempt counts a verification attempt before the secret is
// checked (RFC 4226 §7.3), so parallel guesses cannot outrun the lockout.
// It fails with TooMany while the link is locked or when this attempt is
// over the limit, which locks the link for lockFor.
func (s *Store) ChargeVerifyAttempt(ctx context.Context, linkID string, limit int, lockFor time.Duration) error {
	var attempts int
	err := s.pool.QueryRow(ctx, `
		UPDATE links SET verify_attempts = CASE WHEN locked_until IS NOT NULL THEN 1 ELSE verify_attempts + 1 END,
			locked_until = NULL
		WHERE id = $1 AND (locked_until IS NULL OR locked_until <= now())
		RETURNING verify_attempts`, linkID).Scan(&attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		var until time.Time
		if err := s.pool.QueryRow(ctx, `SELECT coalesce(locked_until, now()) FROM links WHERE id = $1`, linkID).Scan(&until); err != nil {
			return fmt.Errorf("read lock: %w", err)
		}
		return locked(time.Until(until))
	}
	if err != nil {
		return fmt.Errorf("charge verify attempt: %w", err)
	}
	if attempts > limit {
		if _, err := s.pool.Exec(ctx, `UPDATE links SET locked_until = now() + $2 * interval '1 second', verify_attempts = 0 WHERE id = $1`, linkID, lockFor.Seconds()); err != nil {
			return fmt.Errorf("lock link: %w", err)
		}
		return locked(lockFor)
	}
	return nil
}

func locked(d time.Duration) error {
	e := apperr.New(apperr.TooMany, "too_many_attempts", "too many failed attempts; try again later")
	e.RetryAfter = max(d, time.Second)
	return e
}

// FailVerify records a failed verification (an event for the audit trail)
// and locks the link when this was the last allowed attempt.
func (s *Store) FailVerify(ctx context.Context, l link.Link, reason string, actor events.Actor, limit int, lockFor time.Duration) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			UPDATE links SET
				locked_until = CASE WHEN verify_attempts >= $2 THEN now() + $3 * interval '1 second' ELSE locked_until END,
				verify_attempts = CASE WHEN verify_attempts >= $2 THEN 0 ELSE verify_attempts END
			WHERE id = $1`, l.ID, limit, lockFor.Seconds()); err != nil {
			return fmt.Errorf("record failed verify: %w", err)
		}
		return insertEvents(ctx, tx, events.Must(events.LinkVerifyFailed, l.OwnerID, l.ID, actor, events.VerifyFailedData{Reason: reason}))
	})
}

// CountAccessSet is what counting one access sets: the count, the
// exhaustion when it reaches the limit, and the reset of failed attempts.
const CountAccessSet = `access_count = access_count + 1,
	status = CASE WHEN max_access_count IS NOT NULL AND access_count + 1 >= max_access_count
		THEN 'exhausted' ELSE status END,
	ended_at = CASE WHEN max_access_count IS NOT NULL AND access_count + 1 >= max_access_count
		THEN now() ELSE ended_at END,
	verify_attempts = 0, last_accessed_at = now(), updated_at = now()`

// recordEventsSQL continues a WITH whose CTE "ev" inserted outbox rows of
// one event each, RETURNING payload: it records those events in the audit
// trail and enqueues their deliveries to subscribed webhooks (sent by the
// dispatcher's poll) in the same statement. Every event is written so
// (queueEvents, the sweeps, the accesses): nothing an owner reads waits
// on the stream. The rows are read back from the event JSON itself, so
// the trail holds exactly what was published.
const recordEventsSQL = `, rec AS (
		SELECT convert_from(payload, 'UTF8')::jsonb AS j, payload FROM ev
	), au AS (
		INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
		SELECT (j->>'id')::uuid, (j->>'owner_id')::uuid, (j->>'link_id')::uuid, j->>'type',
			(j->>'occurred_at')::timestamptz, j->'actor', coalesce(j->'data', '{}')
		FROM rec
	), wh AS (
		INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload)
		SELECT sharelinks_uuid_v7(), w.id, (rec.j->>'id')::uuid, rec.j->>'type', rec.payload
		FROM rec JOIN webhooks w ON w.owner_id = (rec.j->>'owner_id')::uuid AND w.deleted_at IS NULL
			AND rec.j->>'type' = ANY (w.events)
	)`

// Access counts one access atomically, in one statement: the conditional
// UPDATE re-checks the limit after any concurrent updater commits (Read
// Committed re-evaluates the WHERE clause), so exactly max_access_count
// accesses ever succeed; the consumed challenge, the session and the events
// are written by the same statement. One round trip keeps the row lock
// short, which is what bounds throughput on a hot link.
func (s *Store) Access(ctx context.Context, r link.AccessRequest) (link.AccessResult, error) {
	var (
		challenge, sessID, sessHash, sessExp any
		evID, evSubject, evPre, evPost       any
	)
	if r.ChallengeID != "" {
		challenge = r.ChallengeID
	}
	switch {
	case r.Session != nil:
		sessID, sessHash, sessExp = r.Session.ID, r.Session.TokenHash, r.Session.ExpiresAt
		e := events.Must(events.LinkVerified, r.Link.OwnerID, r.Link.ID, r.Actor,
			events.VerifiedData{AccessCount: 0, SessionID: r.Session.ID})
		pre, post, err := aroundCount(e)
		if err != nil {
			return link.AccessResult{}, err
		}
		evID, evSubject, evPre, evPost = e.ID, e.Subject(), pre, post
	case r.Opened != nil:
		e := events.Must(events.LinkOpened, r.Link.OwnerID, r.Link.ID, r.Actor, *r.Opened)
		raw, err := json.Marshal(e)
		if err != nil {
			return link.AccessResult{}, fmt.Errorf("marshal event: %w", err)
		}
		evID, evSubject, evPre = e.ID, e.Subject(), string(raw) // evPost NULL: no count in it
	}
	ex := events.Must(events.LinkExhausted, r.Link.OwnerID, r.Link.ID, events.System, events.ExhaustedData{AccessCount: 0})
	exPre, exPost, err := aroundCount(ex)
	if err != nil {
		return link.AccessResult{}, err
	}
	var count *int
	var status *string
	var consumed bool
	sql := `
		WITH ch AS (
			UPDATE otp_challenges SET status = 'verified', updated_at = now()
			WHERE $2::uuid IS NOT NULL AND id = $2::uuid AND status IN ('pending', 'sent') AND expires_at > now()
			RETURNING id
		), upd AS (
			UPDATE links SET ` + CountAccessSet + `
			WHERE id = $1 AND status = 'active' AND expires_at > now()
				AND (max_access_count IS NULL OR access_count < max_access_count)
				AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM ch))
				AND ` + networkCheck(14) + `
			RETURNING access_count, status
		), sess AS (
			INSERT INTO access_sessions (id, link_id, token_hash, expires_at)
			SELECT $3::uuid, $1, $4, $5 FROM upd WHERE $3::uuid IS NOT NULL
		), ev AS (
			INSERT INTO outbox (id, subject, payload)
			SELECT $6::uuid, $7, convert_to($8 || coalesce(upd.access_count::text || $9, ''), 'UTF8')
			FROM upd WHERE $6::uuid IS NOT NULL
			UNION ALL
			SELECT $10::uuid, $11, convert_to($12 || upd.access_count::text || $13, 'UTF8')
			FROM upd WHERE upd.status = 'exhausted'
			RETURNING payload
		)` + recordEventsSQL + `
		SELECT (SELECT access_count FROM upd), (SELECT status FROM upd), EXISTS (SELECT 1 FROM ch)`
	err = s.group.run(ctx, r.Link.TokenHash, func(b *pgx.Batch) {
		b.Queue(sql, r.Link.ID, challenge, sessID, sessHash, sessExp, evID, evSubject, evPre, evPost,
			ex.ID, ex.Subject(), exPre, exPost, clientIPArg(r.Actor)).QueryRow(func(row pgx.Row) error {
			return row.Scan(&count, &status, &consumed)
		})
	})
	if err != nil {
		return link.AccessResult{}, fmt.Errorf("count access: %w", err)
	}
	if count == nil {
		if r.ChallengeID != "" && !consumed {
			// Used concurrently by another verify: this one counts nothing.
			return link.AccessResult{}, apperr.New(apperr.Unauthorized, "invalid_code", "the code is wrong or has expired")
		}
		return link.AccessResult{}, apperr.LinkNotFound()
	}
	return link.AccessResult{AccessCount: *count, Exhausted: *status == link.StatusExhausted}, nil
}

// sessionOpenedSQL continues a WITH whose CTE "upd" counted one access
// and returned the link's id, owner_id, access_count and status: it opens
// the session and writes link.verified (and link.exhausted when this was
// the last access), with their audit rows and webhook deliveries. Its
// parameters start at $p, in the order sessionOpenedArgs gives them.
func sessionOpenedSQL(p int) string {
	arg := func(i int) string { return fmt.Sprintf("$%d", p+i) }
	return fmt.Sprintf(`, sess AS (
		INSERT INTO access_sessions (id, link_id, token_hash, expires_at)
		SELECT %[1]s::uuid, id, %[2]s, %[3]s FROM upd
	), e AS (
		SELECT %[4]s::uuid AS id, true AS verified, upd.id AS link_id, upd.owner_id, upd.access_count FROM upd
		UNION ALL
		SELECT %[5]s::uuid, false, upd.id, upd.owner_id, upd.access_count FROM upd WHERE upd.status = 'exhausted'
	), ev AS (
		INSERT INTO outbox (id, subject, payload)
		SELECT e.id, CASE WHEN e.verified THEN %[6]s ELSE %[7]s END, %[8]s FROM e
		RETURNING payload
	)`, arg(0), arg(1), arg(2), arg(3), arg(4), arg(5), arg(6),
		fmt.Sprintf(eventSQL,
			`CASE WHEN e.verified THEN '`+events.LinkVerified+`' ELSE '`+events.LinkExhausted+`' END`,
			`CASE WHEN e.verified THEN '{"access_count":' || e.access_count || ',"session_id":"' || `+arg(0)+`::uuid || '"}'
				ELSE '{"access_count":' || e.access_count || '}' END`,
			`CASE WHEN e.verified THEN `+arg(7)+`::text ELSE '{"type":"system"}' END`)) + recordEventsSQL
}

// sessionOpenedArgs are sessionOpenedSQL's parameters for sess and actor.
func sessionOpenedArgs(sess *link.Session, actor events.Actor) ([]any, error) {
	actorJSON, err := json.Marshal(actor)
	if err != nil {
		return nil, fmt.Errorf("marshal actor: %w", err)
	}
	return []any{sess.ID, sess.TokenHash, sess.ExpiresAt, uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String(),
		events.SubjectPrefix + events.LinkVerified, events.SubjectPrefix + events.LinkExhausted, string(actorJSON)}, nil
}

// accessOpenSQL is Access for an open link named by its token hash, in one
// statement: the token lookup, the count, the session and the events
// (link.verified, and link.exhausted when this was the last access) all
// in one round trip. Any other kind of link matches nothing.
var accessOpenSQL = `
	WITH upd AS (
		UPDATE links SET ` + CountAccessSet + `
		WHERE token_hash = $1 AND auth_type = 'none' AND status = 'active' AND expires_at > now()
			AND (max_access_count IS NULL OR access_count < max_access_count) AND ` + networkCheck(10) + `
		RETURNING *
	)` + sessionOpenedSQL(2) + `
	SELECT ` + linkColumns + ` FROM upd`

// AccessOpen counts one access to the open link whose token hashes to
// tokenHash and opens sess on it (sess.LinkID is filled in). Anything else
// (no such link, not an open link, not active, used up) is LinkNotFound:
// the caller then takes the full path, which tells these apart.
func (s *Store) AccessOpen(ctx context.Context, tokenHash []byte, sess *link.Session, actor events.Actor) (link.Link, error) {
	args, err := sessionOpenedArgs(sess, actor)
	if err != nil {
		return link.Link{}, err
	}
	var row linkRow
	err = s.group.run(ctx, tokenHash, func(b *pgx.Batch) {
		b.Queue(accessOpenSQL, append(append([]any{tokenHash}, args...), clientIPArg(actor))...).QueryRow(row.scan)
	})
	if err != nil {
		return link.Link{}, fmt.Errorf("count open access: %w", err)
	}
	l, err := row.link()
	if err != nil {
		return link.Link{}, err
	}
	if l == nil {
		return link.Link{}, apperr.LinkNotFound()
	}
	sess.LinkID = l.ID
	return *l, nil
}

// aroundCount splits an event's JSON around its data's access_count (which
// it must carry as 0), so SQL can put the real count in between.
func aroundCount(e events.Event) (pre, post string, err error) {
	raw, err := json.Marshal(e)
	if err != nil {
		return "", "", fmt.Errorf("marshal event: %w", err)
	}
	const marker = `"access_count":0`
	// Data is the envelope's last field, and quotes inside string values
	// are escaped, so the last occurrence is the data's own.
	i := strings.LastIndex(string(raw), marker)
	if i < 0 {
		return "", "", fmt.Errorf("event %s has no access_count", e.Type)
	}
	return string(raw[:i+len(marker)-1]), string(raw[i+len(marker):]), nil
}

// openSQL is what opening a target with a session commits, in one
// statement: the link and the session are checked, and link.opened is
// written when the target is the link's (the one named, or its only one).
// The link is returned either way, so the caller can say which target
// was missing.
var openSQL = fmt.Sprintf(`
	WITH l AS (
		SELECT * FROM links
		WHERE token_hash = $1 AND status IN ('active', 'exhausted') AND expires_at > now()
		AND EXISTS (SELECT 1 FROM access_sessions s
			WHERE s.link_id = links.id AND s.token_hash = $2 AND s.expires_at > now())
		AND `+networkCheck(8)+`
	), e AS (
		SELECT $4::uuid AS id, l.id AS link_id, l.owner_id, t->>'id' AS target_id
		FROM l, jsonb_array_elements(l.targets) t
		WHERE CASE WHEN $3 = '' THEN jsonb_array_length(l.targets) = 1 ELSE t->>'id' = $3 END
		LIMIT 1
	), ev AS (
		INSERT INTO outbox (id, subject, payload)
		SELECT e.id, $5, %s FROM e
		RETURNING payload
	)`+recordEventsSQL+`
	SELECT %s FROM l`,
	fmt.Sprintf(eventSQL, `'`+events.LinkOpened+`'`,
		// Target ids are the owner's strings: to_json escapes them.
		`'{"target_id":' || to_json(e.target_id)::text || ',"grant_id":"' || $6::uuid || '"}'`, `$7::text`),
	linkColumns)

// OpenQuery is the statement OpenWithSession sends and its arguments:
// the benchmark's open ceiling runs exactly this through pgx, so that
// ceiling cannot drift from the service's SQL. Its one row is the link's
// columns; no row when the link or the session is not valid.
func OpenQuery(tokenHash, sessionHash []byte, targetID, grantID string, actor events.Actor) (string, []any, error) {
	actorJSON, err := json.Marshal(actor)
	if err != nil {
		return "", nil, fmt.Errorf("marshal actor: %w", err)
	}
	return openSQL, []any{tokenHash, sessionHash, targetID, uuid.Must(uuid.NewV7()).String(),
		events.SubjectPrefix + events.LinkOpened, grantID, string(actorJSON), clientIPArg(actor)}, nil
}

// OpenWithSession returns the link the session belongs to while both are
// valid (an exhausted link still serves the sessions that used up its
// count) and records link.opened for targetID ("" = the only target) with
// grantID, when the link has that target.
func (s *Store) OpenWithSession(ctx context.Context, tokenHash, sessionHash []byte, targetID, grantID string, actor events.Actor) (link.Link, error) {
	sql, args, err := OpenQuery(tokenHash, sessionHash, targetID, grantID, actor)
	if err != nil {
		return link.Link{}, err
	}
	var row linkRow
	err = s.group.run(ctx, tokenHash, func(b *pgx.Batch) {
		b.Queue(sql, args...).QueryRow(row.scan)
	})
	if err != nil {
		return link.Link{}, fmt.Errorf("open with session: %w", err)
	}
	l, err := row.link()
	if err != nil {
		return link.Link{}, err
	}
	if l == nil {
		return link.Link{}, apperr.New(apperr.Unauthorized, "access_required", "verify first: the access token is missing, invalid or expired")
	}
	return *l, nil
}

// SessionLink returns the link a session belongs to while both are valid.
// An exhausted link still serves the sessions that used up its count; a
// revoked or expired one serves nobody.
func (s *Store) SessionLink(ctx context.Context, tokenHash, sessionHash []byte) (link.Link, error) {
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM links
		WHERE token_hash = $1 AND status IN ('active', 'exhausted') AND expires_at > now()
		AND EXISTS (SELECT 1 FROM access_sessions s
			WHERE s.link_id = links.id AND s.token_hash = $2 AND s.expires_at > now())`, tokenHash, sessionHash))
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Link{}, apperr.New(apperr.Unauthorized, "access_required", "verify first: the access token is missing, invalid or expired")
	}
	if err != nil {
		return link.Link{}, fmt.Errorf("session link: %w", err)
	}
	return l, nil
}
