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

func tooMany(reason, msg string, d time.Duration) error {
	e := apperr.New(apperr.TooMany, reason, "%s", msg)
	e.RetryAfter = max(d, time.Second)
	return e
}

// RequestOTP records a new challenge for an OTP link and its otp.requested
// event, after the throttles: a minimum gap and an hourly cap per link, and
// an hourly cap per destination across links. A send that failed since the
// last request is reported instead, once. Older open challenges of the link
// are superseded: only the newest code works.
func (s *Store) RequestOTP(ctx context.Context, l link.Link, lim link.OTPLimits, actor events.Actor) (link.Challenge, error) {
	var ch link.Challenge
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Serialise requests for one link so the throttle holds under concurrency.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM links WHERE id = $1 FOR UPDATE`, l.ID); err != nil {
			return fmt.Errorf("lock link: %w", err)
		}
		var failedID *string
		err := tx.QueryRow(ctx, `SELECT id::text FROM otp_challenges
			WHERE link_id = $1 AND status = 'failed' AND NOT failure_seen AND created_at > now() - interval '1 hour'
			ORDER BY created_at DESC LIMIT 1`, l.ID).Scan(&failedID)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("check failed sends: %w", err)
		}
		if failedID != nil {
			if _, err := tx.Exec(ctx, `UPDATE otp_challenges SET failure_seen = true WHERE id = $1`, *failedID); err != nil {
				return fmt.Errorf("mark failure seen: %w", err)
			}
			ch.FailedBefore = true
			return nil
		}
		var n int
		var last, first *time.Time
		if err := tx.QueryRow(ctx, `SELECT count(*), max(created_at), min(created_at) FROM otp_challenges
			WHERE link_id = $1 AND created_at > now() - interval '1 hour'`, l.ID).Scan(&n, &last, &first); err != nil {
			return fmt.Errorf("count challenges: %w", err)
		}
		now := time.Now()
		if last != nil && now.Sub(*last) < lim.MinGap {
			return tooMany("otp_throttled", "a code was sent moments ago; wait before asking for another", lim.MinGap-now.Sub(*last))
		}
		if n >= lim.PerLinkHour {
			return tooMany("otp_throttled", "too many codes for this link; try again later", first.Add(time.Hour).Sub(now))
		}
		var perDest int
		var firstDest *time.Time
		if err := tx.QueryRow(ctx, `SELECT count(*), min(created_at) FROM otp_challenges
			WHERE recipient = $1 AND created_at > now() - interval '1 hour'`, l.Recipient).Scan(&perDest, &firstDest); err != nil {
			return fmt.Errorf("count destination challenges: %w", err)
		}
		if perDest >= lim.PerDestinationHour {
			return tooMany("otp_throttled", "too many codes sent to this destination; try again later", firstDest.Add(time.Hour).Sub(now))
		}
		if _, err := tx.Exec(ctx, `UPDATE otp_challenges SET status = 'expired', updated_at = now()
			WHERE link_id = $1 AND status IN ('pending', 'sent')`, l.ID); err != nil {
			return fmt.Errorf("supersede challenges: %w", err)
		}
		ch = link.Challenge{ID: newID(), LinkID: l.ID, Channel: channelOf(l.AuthType), Recipient: l.Recipient,
			Status: "pending", ExpiresAt: now.Add(lim.TTL)}
		ch.CodeLength, ch.MaxAttempts = lim.CodeLength, lim.MaxWrongCodes
		if _, err := tx.Exec(ctx, `INSERT INTO otp_challenges (id, link_id, channel, recipient, expires_at, code_length, max_attempts)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, ch.ID, ch.LinkID, ch.Channel, ch.Recipient, ch.ExpiresAt, ch.CodeLength, ch.MaxAttempts); err != nil {
			return fmt.Errorf("insert challenge: %w", err)
		}
		return insertEvents(ctx, tx, events.Must(events.OTPRequested, l.OwnerID, l.ID, actor,
			events.OTPData{ChallengeID: ch.ID, Channel: ch.Channel}))
	})
	return ch, err
}

func channelOf(authType string) string {
	if authType == link.AuthSMSOTP {
		return "sms"
	}
	return "email"
}

// LinkAndChallenge returns the link whose token hashes to tokenHash and
// its newest code challenge (nil when none was requested), in one query:
// a code verify needs both.
func (s *Store) LinkAndChallenge(ctx context.Context, tokenHash []byte) (link.Link, *link.Challenge, error) {
	var (
		id, linkID, channel, recipient, status *string
		codeHash                               []byte
		wrong, length, attempts                *int
		expires                                *time.Time
	)
	l, err := scanLink(s.pool.QueryRow(ctx, `
		WITH l AS (SELECT `+linkColumns+` FROM links WHERE token_hash = $1)
		SELECT l.*, c.id::text, c.link_id::text, c.channel, c.recipient, c.status, c.code_hash, c.wrong_codes,
			c.code_length, c.max_attempts, c.expires_at
		FROM l LEFT JOIN LATERAL (
			SELECT * FROM otp_challenges WHERE otp_challenges.link_id = l.id::uuid ORDER BY created_at DESC LIMIT 1
		) c ON true`, tokenHash), &id, &linkID, &channel, &recipient, &status, &codeHash, &wrong, &length, &attempts, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Link{}, nil, apperr.LinkNotFound()
	}
	if err != nil {
		return link.Link{}, nil, fmt.Errorf("resolve link with challenge: %w", err)
	}
	if id == nil {
		return l, nil, nil
	}
	return l, &link.Challenge{ID: *id, LinkID: *linkID, Channel: *channel, Recipient: *recipient, Status: *status,
		CodeHash: codeHash, WrongCodes: *wrong, CodeLength: *length, MaxAttempts: *attempts, ExpiresAt: *expires}, nil
}

// attemptCodeSQL is a code verify in one statement (link.CodeAttempt):
// the live OTP link whose token hashes to $1; its newest challenge, when
// it can take an attempt (its code sent, not used, not expired, under its
// attempt limit, and as long as the code typed, $2), charged one and, when
// the blinded hashes agree, used up; then, as Access does, the count, the
// session and the events. The row lock on the challenge serialises
// parallel attempts, and each re-checks the limit after the one before it
// commits, so no more than the limit are ever compared. It returns nothing
// when there was nothing to charge.
var attemptCodeSQL = `
	WITH l AS (
		SELECT ` + linkColumns + ` FROM links
		WHERE token_hash = $1 AND status = 'active' AND expires_at > now() AND auth_type IN ('email_otp', 'sms_otp')
			AND ` + networkCheck(13) + `
	), ch AS (
		UPDATE otp_challenges SET wrong_codes = wrong_codes + 1, updated_at = now(),
			status = CASE WHEN sha256($3::bytea || code_hash) = sha256($3::bytea || $4::bytea) THEN 'verified' ELSE status END
		WHERE id = (SELECT c.id FROM otp_challenges c, l WHERE c.link_id = l.id::uuid ORDER BY c.created_at DESC LIMIT 1)
			AND status IN ('pending', 'sent') AND code_hash IS NOT NULL AND wrong_codes < max_attempts
			AND code_length = $2 AND expires_at > now()
		RETURNING id::text, code_hash, wrong_codes, max_attempts, status = 'verified' AS matched
	), upd AS (
		UPDATE links SET ` + CountAccessSet + `
		WHERE id = (SELECT id::uuid FROM l) AND status = 'active' AND expires_at > now()
			AND (max_access_count IS NULL OR access_count < max_access_count)
			AND EXISTS (SELECT 1 FROM ch WHERE matched)
		RETURNING id, owner_id, access_count, status
	)` + sessionOpenedSQL(5) + `
	SELECT l.*, ch.*, EXISTS (SELECT 1 FROM upd) FROM l, ch`

// AttemptCode runs a code verify in one statement and one group commit
// (link.CodeAttempt). When there is nothing to charge (no such live OTP
// link; no challenge, or one locked, used, expired, unsent or out of
// attempts) it is LinkNotFound and charges nothing: the caller then takes
// the full path, which tells these apart.
func (s *Store) AttemptCode(ctx context.Context, a link.CodeAttempt) (link.CodeOutcome, error) {
	sql, args, err := AttemptCodeQuery(a)
	if err != nil {
		return link.CodeOutcome{}, err
	}
	var (
		row linkRow
		out link.CodeOutcome
	)
	err = s.group.run(ctx, a.TokenHash, func(b *pgx.Batch) {
		b.Queue(sql, args...).QueryRow(func(r pgx.Row) error {
			out = link.CodeOutcome{}
			return row.scanExtra(r, &out.Challenge.ID, &out.Challenge.CodeHash, &out.Challenge.WrongCodes, &out.Challenge.MaxAttempts,
				&out.Matched, &out.Counted)
		})
	})
	if err != nil {
		return link.CodeOutcome{}, fmt.Errorf("attempt code: %w", err)
	}
	l, err := row.link()
	if err != nil {
		return link.CodeOutcome{}, err
	}
	if l == nil {
		return link.CodeOutcome{}, apperr.LinkNotFound()
	}
	out.Link, out.Challenge.LinkID, out.Challenge.CodeLength = *l, l.ID, a.CodeLength
	if out.Counted {
		a.Session.LinkID = l.ID
	}
	return out, nil
}

// AttemptCodeQuery is the statement AttemptCode sends for a and its
// arguments: the benchmark's code-verify ceiling runs exactly this
// through pgx, so that ceiling cannot drift from the service's SQL. Its
// one row is the link's columns, the challenge's id, code hash and
// attempts used, whether the code matched, and whether the access was
// counted; no row when there was nothing to charge.
func AttemptCodeQuery(a link.CodeAttempt) (string, []any, error) {
	args, err := sessionOpenedArgs(a.Session, a.Actor)
	if err != nil {
		return "", nil, err
	}
	return attemptCodeSQL, append(append([]any{a.TokenHash, a.CodeLength, a.Blind, a.CodeHash}, args...), clientIPArg(a.Actor)), nil
}

// ChargeCodeAttempt counts an attempt at l's challenge before the code is
// checked and returns the attempts used; a challenge out of attempts is
// locked.
func (s *Store) ChargeCodeAttempt(ctx context.Context, l link.Link, challengeID string) (int, error) {
	var n int
	// Keyed by the link's token hash, as AttemptCode and Access, which lock
	// the same challenge row: keyed by the challenge's id, a round could
	// lock challenges in an order another round reverses.
	err := s.group.run(ctx, l.TokenHash, func(b *pgx.Batch) {
		b.Queue(`UPDATE otp_challenges SET wrong_codes = wrong_codes + 1, updated_at = now()
			WHERE id = $1 AND status IN ('pending', 'sent') AND wrong_codes < max_attempts AND expires_at > now()
			RETURNING wrong_codes`, challengeID).QueryRow(func(row pgx.Row) error {
			n = 0
			if err := row.Scan(&n); !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("charge code attempt: %w", err)
	}
	if n == 0 {
		return 0, apperr.New(apperr.Unauthorized, "code_locked", "too many wrong codes: request a new code")
	}
	return n, nil
}

// FailCode records a wrong code; at the limit the challenge locks.
func (s *Store) FailCode(ctx context.Context, l link.Link, challengeID string, used, limit int, actor events.Actor) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		reason := "bad_code"
		if used >= limit {
			reason = "locked"
			if _, err := tx.Exec(ctx, `UPDATE otp_challenges SET status = 'locked', updated_at = now()
				WHERE id = $1 AND status IN ('pending', 'sent')`, challengeID); err != nil {
				return fmt.Errorf("lock challenge: %w", err)
			}
		}
		return insertEvents(ctx, tx, events.Must(events.LinkVerifyFailed, l.OwnerID, l.ID, actor, events.VerifyFailedData{Reason: reason}))
	})
}
