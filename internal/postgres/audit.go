package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

// ListAudit returns the owner's audit events, newest first, in keyset pages.
func (s *Store) ListAudit(ctx context.Context, ownerID string, q link.AuditQuery) ([]events.Event, error) {
	where := []string{"owner_id = $1"}
	args := []any{ownerID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.LinkID != "" {
		where = append(where, "link_id = "+arg(q.LinkID)+"::uuid")
	}
	if q.Type != "" {
		where = append(where, "type = "+arg(q.Type))
	}
	if !q.Since.IsZero() {
		where = append(where, "occurred_at >= "+arg(q.Since))
	}
	if q.After != nil {
		where = append(where, fmt.Sprintf("(occurred_at, id) < (%s, %s::uuid)", arg(q.After.At), arg(q.After.ID)))
	}
	rows, err := s.pool.Query(ctx, `SELECT id::text, owner_id::text, link_id::text, type, occurred_at, actor, data
		FROM audit_events WHERE `+strings.Join(where, " AND ")+`
		ORDER BY audit_events.occurred_at DESC, audit_events.id DESC LIMIT `+arg(q.Size+1), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Event, error) {
		var e events.Event
		var actor, data []byte
		if err := r.Scan(&e.ID, &e.OwnerID, &e.LinkID, &e.Type, &e.OccurredAt, &actor, &data); err != nil {
			return e, err
		}
		e.Version = 1
		e.Data = data
		return e, json.Unmarshal(actor, &e.Actor)
	})
}
