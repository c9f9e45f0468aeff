package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/apperr"
)

// Webhook is an owner's subscription.
type Webhook struct {
	ID           string
	OwnerID      string
	URL          string
	Events       []string
	SecretSealed []byte
	CreatedAt    time.Time
}

// Delivery is one event to one webhook.
type Delivery struct {
	ID             string
	WebhookID      string
	EventID        string
	EventType      string
	Payload        []byte
	Status         string
	Attempts       int
	LastStatusCode *int
	LastError      *string
	NextAttemptAt  *time.Time
	DeliveredAt    *time.Time
	CreatedAt      time.Time
	// For sending:
	URL          string
	SecretSealed []byte
}

var webhookNotFound = apperr.New(apperr.NotFound, "webhook_not_found", "webhook not found")

// CreateWebhook stores a subscription.
func (s *Store) CreateWebhook(ctx context.Context, w Webhook) (Webhook, error) {
	err := s.pool.QueryRow(ctx, `INSERT INTO webhooks (id, owner_id, url, events, secret_sealed)
		VALUES ($1, $2, $3, $4, $5) RETURNING created_at`, w.ID, w.OwnerID, w.URL, w.Events, w.SecretSealed).Scan(&w.CreatedAt)
	if err != nil {
		return w, fmt.Errorf("create webhook: %w", err)
	}
	return w, nil
}

// ListWebhooks lists the owner's live subscriptions.
func (s *Store) ListWebhooks(ctx context.Context, ownerID string) ([]Webhook, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text, owner_id::text, url, events, created_at FROM webhooks
		WHERE owner_id = $1 AND deleted_at IS NULL ORDER BY created_at`, ownerID)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Webhook, error) {
		var w Webhook
		err := r.Scan(&w.ID, &w.OwnerID, &w.URL, &w.Events, &w.CreatedAt)
		return w, err
	})
}

// DeleteWebhook stops a subscription; pending deliveries are dropped.
func (s *Store) DeleteWebhook(ctx context.Context, ownerID, id string) error {
	if !isUUID(id) {
		return webhookNotFound
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL`, id, ownerID)
		if err != nil {
			return fmt.Errorf("delete webhook: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return webhookNotFound
		}
		_, err = tx.Exec(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook deleted'
			WHERE webhook_id = $1 AND status = 'pending'`, id)
		return err
	})
}

// ListDeliveries returns a webhook's latest deliveries.
func (s *Store) ListDeliveries(ctx context.Context, ownerID, webhookID string, limit int) ([]Delivery, error) {
	if !isUUID(webhookID) {
		return nil, webhookNotFound
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1 AND owner_id = $2)`, webhookID, ownerID).Scan(&exists); err != nil {
		return nil, fmt.Errorf("find webhook: %w", err)
	}
	if !exists {
		return nil, webhookNotFound
	}
	rows, err := s.pool.Query(ctx, `SELECT id::text, webhook_id::text, event_id::text, event_type, status, attempts,
		last_status_code, last_error, CASE WHEN status = 'pending' THEN next_attempt_at END, delivered_at, created_at
		FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at DESC LIMIT $2`, webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Delivery, error) {
		var d Delivery
		err := r.Scan(&d.ID, &d.WebhookID, &d.EventID, &d.EventType, &d.Status, &d.Attempts,
			&d.LastStatusCode, &d.LastError, &d.NextAttemptAt, &d.DeliveredAt, &d.CreatedAt)
		return d, err
	})
}

// ClaimDueDeliveries takes up to batch due deliveries for one attempt each,
// pushing their next attempt past lease so no other dispatcher takes them.
func (s *Store) ClaimDueDeliveries(ctx context.Context, batch int, lease time.Duration) ([]Delivery, error) {
	rows, err := s.pool.Query(ctx, `UPDATE webhook_deliveries d
		SET attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 second'
		FROM webhooks w
		WHERE w.id = d.webhook_id AND d.id IN (
			SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()
			ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING d.id::text, d.webhook_id::text, d.event_id::text, d.event_type, d.payload, d.attempts, d.created_at,
			w.url, w.secret_sealed`, batch, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Delivery, error) {
		var d Delivery
		err := r.Scan(&d.ID, &d.WebhookID, &d.EventID, &d.EventType, &d.Payload, &d.Attempts, &d.CreatedAt, &d.URL, &d.SecretSealed)
		return d, err
	})
}

// DeliveryOutcome records one attempt: delivered, retry at next, or failed.
func (s *Store) DeliveryOutcome(ctx context.Context, id, status string, code *int, lastErr *string, next time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET status = $2, last_status_code = $3, last_error = $4,
		next_attempt_at = $5, delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
		WHERE id = $1 AND status = 'pending'`, id, status, code, lastErr, next)
	if err != nil {
		return fmt.Errorf("record delivery outcome: %w", err)
	}
	return nil
}
