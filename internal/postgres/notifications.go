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

const notificationColumns = `id::text, owner_id::text, link_id::text, channel, recipient, message, status,
	kind, remind_at, attempts, last_error, provider_id, sent_at, created_at, updated_at`

func scanNotification(row pgx.Row) (link.Notification, error) {
	var n link.Notification
	err := row.Scan(&n.ID, &n.OwnerID, &n.LinkID, &n.Channel, &n.Recipient, &n.Message, &n.Status,
		&n.Kind, &n.RemindAt, &n.Attempts, &n.LastError, &n.ProviderID, &n.SentAt, &n.CreatedAt, &n.UpdatedAt)
	return n, err
}

func queueNotifications(b *pgx.Batch, notes []link.Notification) {
	for _, n := range notes {
		b.Queue(`INSERT INTO notifications (id, owner_id, link_id, channel, recipient, message, remind_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, n.ID, n.OwnerID, n.LinkID, n.Channel, n.Recipient, n.Message, n.RemindAt)
	}
}

// InsertNotifications queues notifications, their events and, for an
// idempotent request, its record (idem, or nil) in one transaction. A
// taken key is link.ErrKeyTaken.
func (s *Store) InsertNotifications(ctx context.Context, notes []link.Notification, evs []events.Event, idem *link.Idempotency) error {
	b := &pgx.Batch{}
	queueIdempotency(b, idem)
	queueNotifications(b, notes)
	if err := queueEvents(b, evs); err != nil {
		return err
	}
	if err := s.sendBatch(ctx, b); err != nil {
		return fmt.Errorf("insert notifications: %w", keyTaken(err))
	}
	return nil
}

// RecentNotifications counts the owner's notifications created after
// since, reading at most limit of them (a count past the limit is only
// ever compared with it), and returns the oldest one's time.
func (s *Store) RecentNotifications(ctx context.Context, ownerID string, since time.Time, limit int) (int, time.Time, error) {
	var n int
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM (
		SELECT created_at FROM notifications WHERE owner_id = $1 AND created_at > $2
		ORDER BY created_at LIMIT $3) recent`, ownerID, since, limit).Scan(&n, &oldest)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count recent notifications: %w", err)
	}
	if oldest == nil {
		return n, time.Time{}, nil
	}
	return n, *oldest, nil
}

// GetNotification returns one of the owner's notifications.
func (s *Store) GetNotification(ctx context.Context, ownerID, id string) (link.Notification, error) {
	notFound := apperr.New(apperr.NotFound, "notification_not_found", "notification not found")
	if !isUUID(id) {
		return link.Notification{}, notFound
	}
	n, err := scanNotification(s.pool.QueryRow(ctx, `SELECT `+notificationColumns+` FROM notifications WHERE id = $1 AND owner_id = $2`, id, ownerID))
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Notification{}, notFound
	}
	if err != nil {
		return link.Notification{}, fmt.Errorf("get notification: %w", err)
	}
	return n, nil
}

// LinkNotifications lists a link's notifications, oldest first.
func (s *Store) LinkNotifications(ctx context.Context, ownerID, linkID string) ([]link.Notification, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+notificationColumns+` FROM notifications
		WHERE link_id = $1 AND owner_id = $2 ORDER BY notifications.created_at, notifications.id`, linkID, ownerID)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (link.Notification, error) { return scanNotification(r) })
}
