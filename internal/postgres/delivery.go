package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

// Job is one notification claimed for sending, with what the message needs.
type Job struct {
	Notification link.Notification
	Link         link.Link
	OwnerName    string
}

// ErrNotClaimable means another worker holds the row; Until is when its lease ends.
type ErrNotClaimable struct{ Until time.Time }

func (e *ErrNotClaimable) Error() string {
	return fmt.Sprintf("claimed by another worker until %s", e.Until.Format(time.RFC3339))
}

// ClaimNotification takes a queued notification for one send attempt,
// holding it for lease so no other worker sends it meanwhile. ok is false
// when there is nothing to do (sent, failed or gone): the event is a duplicate.
func (s *Store) ClaimNotification(ctx context.Context, id string, lease time.Duration) (Job, bool, error) {
	var j Job
	var claimed *time.Time
	err := s.pool.QueryRow(ctx, `SELECT status, claimed_until FROM notifications WHERE id = $1`, id).Scan(&j.Notification.Status, &claimed)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, false, nil
	}
	if err != nil {
		return j, false, fmt.Errorf("read notification: %w", err)
	}
	if j.Notification.Status != "queued" {
		return j, false, nil
	}
	n, err := scanNotification(s.pool.QueryRow(ctx, `UPDATE notifications
		SET claimed_until = now() + $2 * interval '1 second', attempts = attempts + 1, updated_at = now(), retry_at = NULL
		WHERE id = $1 AND status = 'queued' AND (claimed_until IS NULL OR claimed_until < now())
		RETURNING `+notificationColumns, id, lease.Seconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		if claimed != nil {
			return j, false, &ErrNotClaimable{Until: *claimed}
		}
		return j, false, nil
	}
	if err != nil {
		return j, false, fmt.Errorf("claim notification: %w", err)
	}
	j.Notification = n
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM links WHERE id = $1`, n.LinkID))
	if err != nil {
		return j, false, fmt.Errorf("read link of notification: %w", err)
	}
	j.Link = l
	if err := s.pool.QueryRow(ctx, `SELECT name FROM owners WHERE id = $1`, n.OwnerID).Scan(&j.OwnerName); err != nil {
		return j, false, fmt.Errorf("read owner: %w", err)
	}
	return j, true, nil
}

// NotificationSent records a successful send and its event.
func (s *Store) NotificationSent(ctx context.Context, n link.Notification, providerID string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE notifications SET status = 'sent', provider_id = $2, sent_at = now(),
			last_error = NULL, claimed_until = NULL, updated_at = now() WHERE id = $1 AND status = 'queued'`, n.ID, providerID)
		if err != nil {
			return fmt.Errorf("mark sent: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return insertEvents(ctx, tx, events.Must(events.NotificationSent, n.OwnerID, n.LinkID, events.System,
			events.NotificationSentData{NotificationID: n.ID, Channel: n.Channel, ProviderID: providerID, Attempts: n.Attempts}))
	})
}

// NotificationRetry records a failed attempt that will be retried after
// delay and releases the claim. The retry's due time lets the reaper tell
// a retry whose event was lost from one still waiting for its delay.
func (s *Store) NotificationRetry(ctx context.Context, id, lastErr string, delay time.Duration) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifications SET last_error = $2, claimed_until = NULL, updated_at = now(),
		retry_at = now() + $3 * interval '1 second'
		WHERE id = $1 AND status = 'queued'`, id, truncateErr(lastErr), delay.Seconds())
	if err != nil {
		return fmt.Errorf("record retry: %w", err)
	}
	return nil
}

// NotificationFailed records a final failure and its event.
func (s *Store) NotificationFailed(ctx context.Context, id, lastErr string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var n link.Notification
		err := tx.QueryRow(ctx, `UPDATE notifications SET status = 'failed', last_error = $2, claimed_until = NULL,
			updated_at = now() WHERE id = $1 AND status = 'queued'
			RETURNING owner_id::text, link_id::text, channel, attempts`, id, truncateErr(lastErr)).
			Scan(&n.OwnerID, &n.LinkID, &n.Channel, &n.Attempts)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mark failed: %w", err)
		}
		return insertEvents(ctx, tx, events.Must(events.NotificationFailed, n.OwnerID, n.LinkID, events.System,
			events.NotificationFailedData{NotificationID: id, Channel: n.Channel, Error: truncateErr(lastErr), Attempts: max(n.Attempts, 1)}))
	})
}

func truncateErr(s string) string {
	if len(s) > 1000 {
		return s[:1000]
	}
	return s
}

// CodeJob is one challenge claimed for sending.
type CodeJob struct {
	Challenge link.Challenge
	Link      link.Link
	Attempts  int
}

// ClaimChallenge takes a pending, unexpired challenge for one send attempt
// and stores the hash of the code about to be sent (replacing any earlier
// one: only the code of the latest attempt works). codeHash is given the
// link's token hash, which the code's hash is bound to, and the length of
// code the challenge was requested with; it makes the code.
func (s *Store) ClaimChallenge(ctx context.Context, id string, lease time.Duration,
	codeHash func(tokenHash []byte, length int) []byte) (CodeJob, bool, error) {
	var j CodeJob
	var status string
	var claimed *time.Time
	var expires time.Time
	var tokenHash []byte
	var length int
	err := s.pool.QueryRow(ctx, `SELECT c.status, c.claimed_until, c.expires_at, l.token_hash, c.code_length
		FROM otp_challenges c JOIN links l ON l.id = c.link_id WHERE c.id = $1`, id).Scan(&status, &claimed, &expires, &tokenHash, &length)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, false, nil
	}
	if err != nil {
		return j, false, fmt.Errorf("read challenge: %w", err)
	}
	if status != "pending" || !expires.After(time.Now()) {
		return j, false, nil
	}
	c := &j.Challenge
	err = s.pool.QueryRow(ctx, `UPDATE otp_challenges
		SET claimed_until = now() + $2 * interval '1 second', send_attempts = send_attempts + 1, code_hash = $3, updated_at = now()
		WHERE id = $1 AND status = 'pending' AND expires_at > now() AND (claimed_until IS NULL OR claimed_until < now())
		RETURNING id::text, link_id::text, channel, recipient, status, expires_at, send_attempts, code_length, max_attempts`,
		id, lease.Seconds(), codeHash(tokenHash, length)).Scan(&c.ID, &c.LinkID, &c.Channel, &c.Recipient, &c.Status, &c.ExpiresAt,
		&j.Attempts, &c.CodeLength, &c.MaxAttempts)
	if errors.Is(err, pgx.ErrNoRows) {
		if claimed != nil {
			return j, false, &ErrNotClaimable{Until: *claimed}
		}
		return j, false, nil
	}
	if err != nil {
		return j, false, fmt.Errorf("claim challenge: %w", err)
	}
	if j.Link, err = scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM links WHERE id = $1`, c.LinkID)); err != nil {
		return j, false, fmt.Errorf("read link of challenge: %w", err)
	}
	return j, true, nil
}

// ChallengeSent records a delivered code and its event.
func (s *Store) ChallengeSent(ctx context.Context, j CodeJob, providerID string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE otp_challenges SET status = 'sent', provider_id = $2, sent_at = now(),
			claimed_until = NULL, last_error = NULL, updated_at = now() WHERE id = $1 AND status = 'pending'`, j.Challenge.ID, providerID)
		if err != nil {
			return fmt.Errorf("mark code sent: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return insertEvents(ctx, tx, events.Must(events.OTPSent, j.Link.OwnerID, j.Link.ID, events.System,
			events.OTPSentData{ChallengeID: j.Challenge.ID, Channel: j.Challenge.Channel, ProviderID: providerID}))
	})
}

// ChallengeRetry records a failed attempt to be retried.
func (s *Store) ChallengeRetry(ctx context.Context, id, lastErr string) error {
	_, err := s.pool.Exec(ctx, `UPDATE otp_challenges SET last_error = $2, claimed_until = NULL, updated_at = now()
		WHERE id = $1 AND status = 'pending'`, id, truncateErr(lastErr))
	if err != nil {
		return fmt.Errorf("record code retry: %w", err)
	}
	return nil
}

// ChallengeFailed records a final send failure and its event; the
// recipient's next code request reports it.
func (s *Store) ChallengeFailed(ctx context.Context, id, lastErr string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var ownerID, linkID, channel string
		err := tx.QueryRow(ctx, `UPDATE otp_challenges c SET status = 'failed', last_error = $2, claimed_until = NULL,
			code_hash = NULL, updated_at = now() FROM links l
			WHERE c.id = $1 AND c.status = 'pending' AND l.id = c.link_id
			RETURNING l.owner_id::text, l.id::text, c.channel`, id, truncateErr(lastErr)).Scan(&ownerID, &linkID, &channel)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mark code failed: %w", err)
		}
		return insertEvents(ctx, tx, events.Must(events.OTPFailed, ownerID, linkID, events.System,
			events.OTPFailedData{ChallengeID: id, Channel: channel, Error: truncateErr(lastErr)}))
	})
}
