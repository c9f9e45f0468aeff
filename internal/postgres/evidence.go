package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/evidence"
)

// auditRecordSQL are the columns of an audit row (aliased a) that
// evidence.Record makes its record of, received by recordRow. The sealer
// and the export both read them so. Building the record in Postgres
// (jsonb_build_object, to_char) cost seven times the scan itself.
const auditRecordSQL = `a.id::text, a.owner_id::text, a.link_id::text, a.type, a.occurred_at, a.actor::text, a.data::text`

// recordRow receives auditRecordSQL.
type recordRow struct {
	id, owner, link, typ string
	at                   time.Time
	actor, data          string
}

func (r *recordRow) dest() []any {
	return []any{&r.id, &r.owner, &r.link, &r.typ, &r.at, &r.actor, &r.data}
}

func (r *recordRow) record() string {
	return evidence.Record(r.id, r.owner, r.link, r.typ, r.at, r.actor, r.data)
}

// SealAudit seals up to batch recorded audit events into their links'
// chains and returns how many. It takes them in (tx, id) order from where
// the last seal stopped, only from transactions below every running one:
// those can neither commit nor add events any more, so nothing committed
// late is ever passed over. The cursor row is locked with SKIP LOCKED:
// while one reaper seals, the others' calls return 0.
func (s *Store) SealAudit(ctx context.Context, batch int) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var curTx, curID string
		err := tx.QueryRow(ctx, `SELECT tx::text, event_id::text FROM audit_seal_cursor FOR UPDATE SKIP LOCKED`).Scan(&curTx, &curID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock seal cursor: %w", err)
		}
		// Seals are derived from the trail in a fixed order: a crash that
		// loses this commit loses nothing, the next run seals the same
		// events to the same hashes. So it need not wait for its flush.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return fmt.Errorf("seal without waiting for the flush: %w", err)
		}
		rows, err := tx.Query(ctx, `
			SELECT a.tx::text, `+auditRecordSQL+`
			FROM audit_events a
			WHERE (a.tx, a.id) > ($1::xid8, $2::uuid) AND a.tx < pg_snapshot_xmin(pg_current_snapshot())
			ORDER BY a.tx, a.id LIMIT $3`, curTx, curID, batch)
		if err != nil {
			return fmt.Errorf("read unsealed events: %w", err)
		}
		type event struct{ tx, id, link, record string }
		evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event, error) {
			var rec recordRow
			var tx string
			if err := r.Scan(append([]any{&tx}, rec.dest()...)...); err != nil {
				return event{}, err
			}
			return event{tx: tx, id: rec.id, link: rec.link, record: rec.record()}, nil
		})
		if err != nil {
			return fmt.Errorf("read unsealed events: %w", err)
		}
		if len(evs) == 0 {
			return nil
		}
		type head struct {
			seq  int64
			hash []byte
		}
		heads := map[string]*head{}
		var links []string
		for _, e := range evs {
			if heads[e.link] == nil {
				heads[e.link] = &head{hash: evidence.Genesis(e.link)}
				links = append(links, e.link)
			}
		}
		hr, err := tx.Query(ctx, `
			SELECT l::text, h.seq, h.hash FROM unnest($1::uuid[]) l,
			LATERAL (SELECT seq, hash FROM audit_seals WHERE link_id = l ORDER BY seq DESC LIMIT 1) h`, links)
		if err != nil {
			return fmt.Errorf("read chain heads: %w", err)
		}
		var link string
		var seq int64
		var hash []byte
		if _, err := pgx.ForEachRow(hr, []any{&link, &seq, &hash}, func() error {
			heads[link].seq, heads[link].hash = seq, hash
			return nil
		}); err != nil {
			return fmt.Errorf("read chain heads: %w", err)
		}
		seals := make([][]any, len(evs))
		for i, e := range evs {
			h := heads[e.link]
			h.seq++
			h.hash = evidence.Next(h.hash, e.record)
			seals[i] = []any{e.link, h.seq, e.id, h.hash}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_seals"}, []string{"link_id", "seq", "event_id", "hash"},
			pgx.CopyFromRows(seals)); err != nil {
			return fmt.Errorf("write seals: %w", err)
		}
		last := evs[len(evs)-1]
		if _, err := tx.Exec(ctx, `UPDATE audit_seal_cursor SET tx = $1::xid8, event_id = $2::uuid`, last.tx, last.id); err != nil {
			return fmt.Errorf("move seal cursor: %w", err)
		}
		n = len(evs)
		return nil
	})
	return n, err
}

// auditSealLagSQL is AuditSealLag's query. The cursor is read into
// scalars first: compared with a joined row, (tx, id) is no index
// condition, and every event ever recorded was scanned once per reaper
// round (224 ms at 57,000 events, BENCHMARKS.md, session 18).
const auditSealLagSQL = `
	SELECT coalesce((SELECT extract(epoch FROM now() - a.occurred_at)::float8
		FROM audit_events a
		WHERE (a.tx, a.id) > ((SELECT tx FROM audit_seal_cursor), (SELECT event_id FROM audit_seal_cursor))
		ORDER BY a.tx, a.id LIMIT 1), 0)`

// AuditSealLag is how long the oldest event not sealed yet has waited
// (0 when every event is sealed).
func (s *Store) AuditSealLag(ctx context.Context) (time.Duration, error) {
	var secs float64
	err := s.pool.QueryRow(ctx, auditSealLagSQL).Scan(&secs)
	if err != nil {
		return 0, fmt.Errorf("audit seal lag: %w", err)
	}
	return time.Duration(max(secs, 0) * float64(time.Second)), nil
}

// AuditChain reads a link's sealed chain in one snapshot, so head, count
// and entries agree while sealing goes on: start gets the head and how
// many of the link's events are not sealed yet, then entry each sealed
// event in order, as rows arrive (a long chain is never held in memory).
// A link with no events of this owner (also: another owner's) is NotFound.
func (s *Store) AuditChain(ctx context.Context, ownerID, linkID string,
	start func(head evidence.Head, unsealed int64) error, entry func(evidence.Entry) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var owned bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_events WHERE link_id = $1 AND owner_id = $2)`,
			linkID, ownerID).Scan(&owned); err != nil {
			return fmt.Errorf("find link events: %w", err)
		}
		if !owned {
			return apperr.New(apperr.NotFound, "link_not_found", "link not found")
		}
		head := evidence.Head{Hash: hex.EncodeToString(evidence.Genesis(linkID))}
		var hash []byte
		err := tx.QueryRow(ctx, `SELECT seq, hash, sealed_at FROM audit_seals WHERE link_id = $1 ORDER BY seq DESC LIMIT 1`,
			linkID).Scan(&head.Seq, &hash, &head.SealedAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read chain head: %w", err)
		default:
			head.Hash = hex.EncodeToString(hash)
			head.SealedAt = head.SealedAt.UTC()
		}
		// Every event of the link is either sealed (seq 1..head) or not yet.
		var events int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE link_id = $1`, linkID).Scan(&events); err != nil {
			return fmt.Errorf("count link events: %w", err)
		}
		if err := start(head, max(events-head.Seq, 0)); err != nil {
			return err
		}
		// An event deleted from the trail drops out of this join and
		// leaves a gap in seq: the export shows it, Verify rejects it.
		rows, err := tx.Query(ctx, `SELECT s.seq, s.hash, `+auditRecordSQL+`
			FROM audit_seals s JOIN audit_events a ON a.id = s.event_id
			WHERE s.link_id = $1 AND s.seq <= $2 ORDER BY s.seq`, linkID, head.Seq)
		if err != nil {
			return fmt.Errorf("read chain: %w", err)
		}
		var e evidence.Entry
		var rec recordRow
		_, err = pgx.ForEachRow(rows, append([]any{&e.Seq, &hash}, rec.dest()...), func() error {
			e.Record, e.Hash = rec.record(), hex.EncodeToString(hash)
			return entry(e)
		})
		if err != nil {
			return fmt.Errorf("read chain: %w", err)
		}
		return nil
	})
}
