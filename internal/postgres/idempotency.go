package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sharelinks/sharelinks/internal/link"
)

// idempotencyKeyConstraint is the primary key a second request with a
// taken Idempotency-Key runs into (migration 009).
const idempotencyKeyConstraint = "idempotency_keys_pkey"

// queueIdempotency adds the record of an idempotent request to the batch
// that makes what it names, first, so a taken key fails the batch before
// anything else of it runs.
func queueIdempotency(b *pgx.Batch, idem *link.Idempotency) {
	if idem == nil {
		return
	}
	b.Queue(`INSERT INTO idempotency_keys (owner_id, key, operation, fingerprint, result_ids)
		VALUES ($1, $2, $3, $4, $5::text[]::uuid[])`,
		idem.OwnerID, idem.Key, idem.Operation, idem.Fingerprint, idem.ResultIDs)
}

// idempotencyLockKey orders an idempotent job among the others of its
// group-commit round: two rounds waiting on each other's keys take them in
// the same order, so they cannot deadlock.
func idempotencyLockKey(idem *link.Idempotency) []byte {
	if idem == nil {
		return nil
	}
	return []byte("idem\x00" + idem.OwnerID + "\x00" + idem.Key)
}

// keyTaken turns the primary-key error of a second request with the same
// Idempotency-Key into link.ErrKeyTaken; other errors pass unchanged.
func keyTaken(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation && pgErr.ConstraintName == idempotencyKeyConstraint {
		return link.ErrKeyTaken
	}
	return err
}

// IdempotentResult returns the owner's record of key if it was made at or
// after notBefore. An older record is deleted on the way, so the key can
// be used again whether or not the reaper has swept it yet; the usual
// answer (no record, or a live one) is one read-only statement.
func (s *Store) IdempotentResult(ctx context.Context, ownerID, key string, notBefore time.Time) (link.Idempotency, bool, error) {
	rec := link.Idempotency{OwnerID: ownerID, Key: key}
	var live bool
	err := s.pool.QueryRow(ctx, `SELECT operation, fingerprint, result_ids::text[], created_at >= $3
		FROM idempotency_keys WHERE owner_id = $1 AND key = $2`, ownerID, key, notBefore).
		Scan(&rec.Operation, &rec.Fingerprint, &rec.ResultIDs, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Idempotency{}, false, nil
	}
	if err != nil {
		return link.Idempotency{}, false, fmt.Errorf("look up idempotency key: %w", err)
	}
	if !live {
		if _, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE owner_id = $1 AND key = $2 AND created_at < $3`,
			ownerID, key, notBefore); err != nil {
			return link.Idempotency{}, false, fmt.Errorf("forget expired idempotency key: %w", err)
		}
		return link.Idempotency{}, false, nil
	}
	return rec, true, nil
}

// DeleteOldIdempotencyKeys removes keys past link.IdempotencyTTL: a retry
// later than that is a new request.
func (s *Store) DeleteOldIdempotencyKeys(ctx context.Context, batch int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys
		WHERE (owner_id, key) IN (SELECT owner_id, key FROM idempotency_keys
			WHERE created_at < now() - $2 * interval '1 second'
			ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)`, batch, link.IdempotencyTTL.Seconds())
	if err != nil {
		return 0, fmt.Errorf("delete old idempotency keys: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// OwnedNotifications returns those of ids that belong to the owner.
func (s *Store) OwnedNotifications(ctx context.Context, ownerID string, ids []string) ([]link.Notification, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+notificationColumns+` FROM notifications
		WHERE owner_id = $1 AND id = ANY($2::text[]::uuid[])`, ownerID, ids)
	if err != nil {
		return nil, fmt.Errorf("owned notifications: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (link.Notification, error) { return scanNotification(r) })
}
