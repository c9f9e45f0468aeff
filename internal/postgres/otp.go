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
		// The link counts the attempts of its newest challenge (018).
		if _, err := tx.Exec(ctx, `UPDATE links SET code_challenge = $2, code_tries = 0, code_used = false WHERE id = $1`,
			l.ID, ch.ID); err != nil {
			return fmt.Errorf("point the link at its challenge: %w", err)
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
// a code verify needs both. The attempts used and the use come from the
// link, which counts them for the challenge it names (migration 018).
func (s *Store) LinkAndChallenge(ctx context.Context, tokenHash []byte) (link.Link, *link.Challenge, error) {
	var (
		id, linkID, channel, recipient, status *string
		codeHash                               []byte
		length, attempts                       *int
		expires                                *time.Time
		codeChallenge                          *string
		tries                                  int
		used                                   bool
	)
	l, err := scanLink(s.pool.QueryRow(ctx, `
		WITH l AS (SELECT `+linkColumns+`, code_challenge::text, code_tries, code_used FROM links WHERE token_hash = $1)
		SELECT l.*, c.id::text, c.link_id::text, c.channel, c.recipient, c.status, c.code_hash,
			c.code_length, c.max_attempts, c.expires_at
		FROM l LEFT JOIN LATERAL (
			SELECT * FROM otp_challenges WHERE otp_challenges.link_id = l.id::uuid ORDER BY created_at DESC LIMIT 1
		) c ON true`, tokenHash), &codeChallenge, &tries, &used, &id, &linkID, &channel, &recipient, &status, &codeHash, &length, &attempts, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Link{}, nil, apperr.LinkNotFound()
	}
	if err != nil {
		return link.Link{}, nil, fmt.Errorf("resolve link with challenge: %w", err)
	}
	if id == nil {
		return l, nil, nil
	}
	ch := &link.Challenge{ID: *id, LinkID: *linkID, Channel: *channel, Recipient: *recipient, Status: *status,
		CodeHash: codeHash, CodeLength: *length, MaxAttempts: *attempts, ExpiresAt: *expires}
	if codeChallenge != nil && *codeChallenge == ch.ID && (ch.Status == "pending" || ch.Status == "sent") {
		ch.WrongCodes = tries
		switch {
		case used:
			ch.Status = "verified"
		case tries >= ch.MaxAttempts:
			ch.Status = "locked"
		}
	}
	return l, ch, nil
}

// attemptCodeSQL is a code verify in one statement (link.CodeAttempt),
// one row written: the live OTP link whose token hashes to $1, when the
// challenge it names can take an attempt (its code sent, not used, not
// expired, under its attempt limit, and as long as the code typed, $2),
// is charged one attempt and, when the blinded hashes agree, the code is
// used and the access counted; then, as Access does, the session and the
// events. The challenge is only read. Parallel attempts serialise on the
// link's row lock, and each re-checks the limit against the attempt
// before it once that commits, so no more than the limit are ever
// compared. It returns nothing when there was nothing to charge.
var attemptCodeSQL = `
	WITH att AS (
		UPDATE links SET code_tries = code_tries + 1, code_used = m.ok,
			access_count = access_count + m.ok::int,
			status = CASE WHEN m.ok AND max_access_count IS NOT NULL AND access_count + 1 >= max_access_count
				THEN 'exhausted' ELSE status END,
			ended_at = CASE WHEN m.ok AND max_access_count IS NOT NULL AND access_count + 1 >= max_access_count
				THEN now() ELSE ended_at END,
			verify_attempts = CASE WHEN m.ok THEN 0 ELSE verify_attempts END,
			last_accessed_at = CASE WHEN m.ok THEN now() ELSE last_accessed_at END,
			updated_at = CASE WHEN m.ok THEN now() ELSE updated_at END
		FROM (SELECT id AS cid, code_hash AS chash, max_attempts AS cmax, status AS cstatus,
				code_length AS clength, expires_at AS cexpires FROM otp_challenges) c
			CROSS JOIN LATERAL (SELECT sha256($3::bytea || c.chash) = sha256($3::bytea || $4::bytea) AS ok) m
		WHERE token_hash = $1 AND status = 'active' AND expires_at > now() AND auth_type IN ('email_otp', 'sms_otp')
			AND (max_access_count IS NULL OR access_count < max_access_count) AND ` + networkCheck(13) + `
			AND c.cid = code_challenge AND NOT code_used AND code_tries < c.cmax
			AND c.cstatus IN ('pending', 'sent') AND c.chash IS NOT NULL AND c.clength = $2 AND c.cexpires > now()
		RETURNING ` + linkColumns + `, c.cid::text AS cid, c.chash, code_tries, c.cmax, m.ok
	), upd AS (
		SELECT id::uuid AS id, owner_id::uuid AS owner_id, access_count, status FROM att WHERE ok
	)` + sessionOpenedSQL(5) + `
	SELECT * FROM att`

// AttemptCode runs a code verify in one statement and one group commit
// (link.CodeAttempt). When there is nothing to charge (no such live OTP
// link; no challenge, or one used, expired, unsent, of another length or
// out of attempts) it is LinkNotFound and charges nothing: the caller then
// takes the full path, which tells these apart.
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
				&out.Counted)
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
// one row is the link's columns (after the attempt), the challenge's id,
// code hash and attempt limit, the attempts used, and whether the code
// matched and the access was counted; no row when there was nothing to
// charge.
func AttemptCodeQuery(a link.CodeAttempt) (string, []any, error) {
	args, err := sessionOpenedArgs(a.Session, a.Actor)
	if err != nil {
		return "", nil, err
	}
	return attemptCodeSQL, append(append([]any{a.TokenHash, a.CodeLength, a.Blind, a.CodeHash}, args...), clientIPArg(a.Actor)), nil
}

// ChargeCodeAttempt counts a code attempt against the link's challenge
// before the code is checked and returns the attempts used; a challenge
// used, ended or out of attempts is code_locked.
func (s *Store) ChargeCodeAttempt(ctx context.Context, l link.Link, challengeID string) (int, error) {
	var n int
	// Keyed, as every statement that writes a link row, by its token hash.
	err := s.group.run(ctx, l.TokenHash, func(b *pgx.Batch) {
		b.Queue(`UPDATE links SET code_tries = code_tries + 1
			WHERE id = $1 AND code_challenge = $2 AND NOT code_used
				AND code_tries < (SELECT max_attempts FROM otp_challenges
					WHERE id = $2 AND status IN ('pending', 'sent') AND expires_at > now())
			RETURNING code_tries`, l.ID, challengeID).QueryRow(func(row pgx.Row) error {
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

// FailCode records a wrong code (the link's count of attempts is what
// locks the challenge at its limit).
func (s *Store) FailCode(ctx context.Context, l link.Link, used, limit int, actor events.Actor) error {
	reason := "bad_code"
	if used >= limit {
		reason = "locked"
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		return insertEvents(ctx, tx, events.Must(events.LinkVerifyFailed, l.OwnerID, l.ID, actor, events.VerifyFailedData{Reason: reason}))
	})
}
