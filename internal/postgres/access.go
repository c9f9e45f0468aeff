package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// Access counts one access atomically: the conditional UPDATE re-checks the
// limit after any concurrent updater commits (Read Committed re-evaluates
// the WHERE clause), so exactly max_access_count accesses ever succeed.
// The session, the consumed challenge and the events commit with it.
func (s *Store) Access(ctx context.Context, r link.AccessRequest) (link.AccessResult, error) {
	var res link.AccessResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `
			UPDATE links SET access_count = access_count + 1,
				status = CASE WHEN max_access_count IS NOT NULL AND access_count + 1 >= max_access_count
					THEN 'exhausted' ELSE status END,
				ended_at = CASE WHEN max_access_count IS NOT NULL AND access_count + 1 >= max_access_count
					THEN now() ELSE ended_at END,
				verify_attempts = 0, last_accessed_at = now(), updated_at = now()
			WHERE id = $1 AND status = 'active' AND expires_at > now()
				AND (max_access_count IS NULL OR access_count < max_access_count)
			RETURNING access_count, status`, r.Link.ID).Scan(&res.AccessCount, &status)
		if errors.Is(err, pgx.ErrNoRows) {
			return apperr.LinkNotFound()
		}
		if err != nil {
			return fmt.Errorf("count access: %w", err)
		}
		res.Exhausted = status == link.StatusExhausted
		if r.ChallengeID != "" {
			tag, err := tx.Exec(ctx, `UPDATE otp_challenges SET status = 'verified', updated_at = now()
				WHERE id = $1 AND status IN ('pending', 'sent') AND expires_at > now()`, r.ChallengeID)
			if err != nil {
				return fmt.Errorf("consume challenge: %w", err)
			}
			if tag.RowsAffected() == 0 {
				// Used concurrently by another verify: this one counts nothing.
				return apperr.New(apperr.Unauthorized, "invalid_code", "the code is wrong or has expired")
			}
		}
		var evs []events.Event
		if r.Session != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO access_sessions (id, link_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)`,
				r.Session.ID, r.Link.ID, r.Session.TokenHash, r.Session.ExpiresAt); err != nil {
				return fmt.Errorf("insert session: %w", err)
			}
			evs = append(evs, events.Must(events.LinkVerified, r.Link.OwnerID, r.Link.ID, r.Actor,
				events.VerifiedData{AccessCount: res.AccessCount, SessionID: r.Session.ID}))
		}
		if r.Opened != nil {
			evs = append(evs, events.Must(events.LinkOpened, r.Link.OwnerID, r.Link.ID, r.Actor, *r.Opened))
		}
		if res.Exhausted {
			evs = append(evs, events.Must(events.LinkExhausted, r.Link.OwnerID, r.Link.ID, events.System,
				events.ExhaustedData{AccessCount: res.AccessCount}))
		}
		return insertEvents(ctx, tx, evs...)
	})
	return res, err
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
