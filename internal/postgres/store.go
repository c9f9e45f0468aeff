package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sharelinks/sharelinks/internal/events"
)

// Store runs the service's SQL. After every commit that wrote outbox rows it
// calls Wake, so the relay publishes at once instead of at its next poll.
type Store struct {
	pool  *pgxpool.Pool
	wake  func()
	group *groupCommit
}

// NewStore wraps a pool. wake may be nil.
func NewStore(pool *pgxpool.Pool, wake func()) *Store {
	if wake == nil {
		wake = func() {}
	}
	return &Store{pool: pool, wake: wake, group: newGroupCommit(pool, wake)}
}

// Pool exposes the pool for readiness checks and the relay.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// inTx runs fn in a transaction and wakes the relay after a commit.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, s.pool, fn); err != nil {
		return err
	}
	s.wake()
	return nil
}

// sendBatch runs a batch in one round trip. pgx sends it with a single
// Sync, so the server runs it as one implicit transaction: all statements
// commit or none do, without the BEGIN and COMMIT round trips.
func (s *Store) sendBatch(ctx context.Context, b *pgx.Batch) error {
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	s.wake()
	return nil
}

// recordedEventSQL writes one event with the change that causes it: its
// outbox row, its audit row and its deliveries to subscribed webhooks, in
// one statement. Every event is recorded so, in the transaction of its
// change: the audit trail and the webhooks never depend on the event
// surviving the stream (Postgres is the source of truth; a JetStream that
// loses an acknowledged tail loses transport only).
const recordedEventSQL = `WITH ev AS (
		INSERT INTO outbox (id, subject, payload) VALUES ($1, $2, $3)
		RETURNING payload
	)` + recordEventsSQL + `
	SELECT 1`

// queueEvents adds each event of evs, recorded, to a batch.
func queueEvents(b *pgx.Batch, evs []events.Event) error {
	for _, e := range evs {
		payload, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("marshal event %s: %w", e.Type, err)
		}
		b.Queue(recordedEventSQL, e.ID, e.Subject(), payload)
	}
	return nil
}

// insertEvents writes evs, recorded, inside tx.
func insertEvents(ctx context.Context, tx pgx.Tx, evs ...events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	if err := queueEvents(b, evs); err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("insert outbox rows: %w", err)
	}
	return nil
}

// newID returns a time-ordered id.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
