package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

// RecordEvents stores evs in the audit trail and, in the same statement
// (one round trip, one commit), reports which of hookOwners have at least
// one live webhook, so the events consumer can fan out to webhooks without
// a second lookup. A redelivered event inserts nothing (the event id is
// the key). The batch was committed before it was consumed, so the lookup
// sees every webhook that existed when its events occurred.
func (s *Store) RecordEvents(ctx context.Context, evs []events.Event, hookOwners []string) (map[string]bool, error) {
	n := len(evs)
	ids, owners, links, types := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	at := make([]time.Time, n)
	actors, data := make([]string, n), make([]string, n)
	for i, e := range evs {
		actor, err := json.Marshal(e.Actor)
		if err != nil {
			return nil, fmt.Errorf("marshal actor: %w", err)
		}
		ids[i], owners[i], links[i], types[i], at[i], actors[i] = e.ID, e.OwnerID, e.LinkID, e.Type, e.OccurredAt, string(actor)
		data[i] = "{}"
		if len(e.Data) > 0 {
			data[i] = string(e.Data)
		}
	}
	rows, err := s.pool.Query(ctx, `WITH audit AS (
			INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
			SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[]::uuid[], $4::text[], $5::timestamptz[], $6::jsonb[], $7::jsonb[])
			ON CONFLICT (id) DO NOTHING
		)
		SELECT DISTINCT owner_id::text FROM webhooks
		WHERE owner_id = ANY($8::text[]::uuid[]) AND deleted_at IS NULL`, ids, owners, links, types, at, actors, data, hookOwners)
	if err != nil {
		return nil, fmt.Errorf("record events: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("record events: %w", err)
	}
	out := make(map[string]bool, len(have))
	for _, o := range have {
		out[o] = true
	}
	return out, nil
}

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
