package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

const linkColumns = `id::text, owner_id::text, token_hash, token_sealed, status, link_type, auth_type,
	coalesce(recipient, ''), coalesce(password_hash, ''), targets, expires_at, max_access_count,
	access_count, title, message, locked_until, created_at, updated_at, revoked_at, last_accessed_at, allowed_networks, tags, not_before, otp_policy`

// scanLink reads linkColumns, then any extra columns into extra.
func scanLink(row pgx.Row, extra ...any) (link.Link, error) {
	var r linkRow
	if err := row.Scan(r.dest(extra...)...); err != nil {
		return link.Link{}, err
	}
	r.found = true
	l, err := r.link()
	if err != nil {
		return link.Link{}, err
	}
	return *l, nil
}

// linkRow receives a linkColumns row. In a batch callback, which must not
// fail on its own decoding (see groupCommit), scan reads the columns and
// link decodes the targets after the round.
type linkRow struct {
	l       link.Link
	targets []byte
	found   bool
}

// dest lists the destinations of linkColumns, then extra.
func (r *linkRow) dest(extra ...any) []any {
	l := &r.l
	return append([]any{&l.ID, &l.OwnerID, &l.TokenHash, &l.TokenSealed, &l.Status, &l.LinkType, &l.AuthType,
		&l.Recipient, &l.PasswordHash, &r.targets, &l.ExpiresAt, &l.MaxAccessCount,
		&l.AccessCount, &l.Title, &l.Message, &l.LockedUntil, &l.CreatedAt, &l.UpdatedAt, &l.RevokedAt, &l.LastAccessedAt,
		&l.AllowedNetworks, &l.Tags, &l.NotBefore, &l.OTPPolicy}, extra...)
}

// scan is a batch callback: no row is not an error, and an attempt that
// is repeated starts from nothing.
func (r *linkRow) scan(row pgx.Row) error { return r.scanExtra(row) }

// scanExtra is scan with extra columns after the link's; the caller
// resets what they point to.
func (r *linkRow) scanExtra(row pgx.Row, extra ...any) error {
	*r = linkRow{}
	err := row.Scan(r.dest(extra...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	r.found = err == nil
	return err
}

// link returns the row's link, or nil when there was none.
func (r *linkRow) link() (*link.Link, error) {
	if !r.found {
		return nil, nil
	}
	if err := json.Unmarshal(r.targets, &r.l.Targets); err != nil {
		return nil, fmt.Errorf("decode targets of %s: %w", r.l.ID, err)
	}
	return &r.l, nil
}

// InsertLinks writes links, their notifications, all events and, for an
// idempotent request, its record (idem, or nil) in one transaction: either
// everything exists afterwards or nothing does. A taken key is
// link.ErrKeyTaken.
func (s *Store) InsertLinks(ctx context.Context, links []link.Link, notes []link.Notification, evs []events.Event, idem *link.Idempotency) error {
	b := &pgx.Batch{}
	queueIdempotency(b, idem)
	for _, l := range links {
		targets, err := json.Marshal(l.Targets)
		if err != nil {
			return fmt.Errorf("marshal targets: %w", err)
		}
		b.Queue(`INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, recipient,
			password_hash, targets, expires_at, max_access_count, title, message, allowed_networks, tags, not_before, otp_policy)
			VALUES ($1, $2, $3, $4, $5, $6, nullif($7, ''), nullif($8, ''), $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
			l.ID, l.OwnerID, l.TokenHash, l.TokenSealed, l.LinkType, l.AuthType, l.Recipient,
			l.PasswordHash, targets, l.ExpiresAt, l.MaxAccessCount, l.Title, l.Message, networksArg(l.AllowedNetworks), tagsArg(l.Tags), l.NotBefore,
			l.OTPPolicy)
	}
	queueNotifications(b, notes)
	if err := queueEvents(b, evs); err != nil {
		return err
	}
	err := s.group.run(ctx, idempotencyLockKey(idem), func(round *pgx.Batch) { requeue(round, b) })
	if err != nil {
		return fmt.Errorf("insert links: %w", keyTaken(err))
	}
	return nil
}

// GetLink returns one of the owner's links; another owner's link is
// indistinguishable from a missing one.
func (s *Store) GetLink(ctx context.Context, ownerID, id string) (link.Link, error) {
	if !isUUID(id) {
		return link.Link{}, apperr.New(apperr.NotFound, "link_not_found", "link not found")
	}
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM links WHERE id = $1 AND owner_id = $2`, id, ownerID))
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Link{}, apperr.New(apperr.NotFound, "link_not_found", "link not found")
	}
	if err != nil {
		return link.Link{}, fmt.Errorf("get link: %w", err)
	}
	return l, nil
}

// ListLinks returns one page of the owner's links in keyset order and the
// number of links matching the filters.
func (s *Store) ListLinks(ctx context.Context, ownerID string, q link.Query) ([]link.Link, int, error) {
	where := []string{"owner_id = $1"}
	args := []any{ownerID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	switch q.Status {
	case link.StatusActive:
		where = append(where, "status = 'active' AND expires_at > now()")
	case link.StatusExpired:
		where = append(where, "(status = 'expired' OR (status = 'active' AND expires_at <= now()))")
	case link.StatusExhausted, link.StatusRevoked:
		where = append(where, "status = "+arg(q.Status))
	}
	if q.LinkType != "" {
		where = append(where, "link_type = "+arg(q.LinkType))
	}
	if q.TargetID != "" {
		t, _ := json.Marshal([]map[string]string{{"id": q.TargetID}})
		where = append(where, "targets @> "+arg(string(t))+"::jsonb")
	}
	if q.Recipient != "" {
		where = append(where, "recipient = "+arg(q.Recipient))
	}
	if q.Tag != "" {
		where = append(where, "tags @> ARRAY["+arg(q.Tag)+"::text]")
	}
	filter := strings.Join(where, " AND ")
	var count int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM links WHERE `+filter, args...).Scan(&count); err != nil {
		return nil, 0, fmt.Errorf("count links: %w", err)
	}
	col := "created_at"
	if q.OrderBy == "expires_at" {
		col = "expires_at"
	}
	dir, cmp := "ASC", ">"
	if q.Desc {
		dir, cmp = "DESC", "<"
	}
	page := filter
	if q.After != nil {
		page += fmt.Sprintf(" AND (%s, id) %s (%s, %s::uuid)", col, cmp, arg(q.After.At), arg(q.After.ID))
	}
	sql := fmt.Sprintf(`SELECT %s FROM links WHERE %s ORDER BY links.%s %s, links.id %s LIMIT %s`,
		linkColumns, page, col, dir, dir, arg(q.Size+1))
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list links: %w", err)
	}
	links, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (link.Link, error) { return scanLink(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("list links: %w", err)
	}
	return links, count, nil
}

// RevokeLinks revokes the owner's links among ids. It returns the ids that
// exist for this owner (revoking twice is not an error) and emits
// link.revoked only for links that changed. Sessions die with the link.
func (s *Store) RevokeLinks(ctx context.Context, owner link.Owner, ids []string, actor events.Actor) ([]string, error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if isUUID(id) {
			valid = append(valid, id)
		}
	}
	var found []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id::text, status FROM links WHERE owner_id = $1 AND id = ANY($2::text[]::uuid[]) FOR UPDATE`, owner.ID, valid)
		if err != nil {
			return fmt.Errorf("lock links: %w", err)
		}
		var changed []string
		found = found[:0]
		for rows.Next() {
			var id, status string
			if err := rows.Scan(&id, &status); err != nil {
				return fmt.Errorf("scan link: %w", err)
			}
			found = append(found, id)
			if status != link.StatusRevoked {
				changed = append(changed, id)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("lock links: %w", err)
		}
		return revokeLocked(ctx, tx, owner, changed, actor)
	})
	return found, err
}

// RevokeTarget revokes every active link of the owner that shares
// targetID (a file deleted or moved in the owner's storage) and returns
// their ids.
func (s *Store) RevokeTarget(ctx context.Context, owner link.Owner, targetID string, actor events.Actor) ([]string, error) {
	t, err := json.Marshal([]map[string]string{{"id": targetID}})
	if err != nil {
		return nil, fmt.Errorf("encode target: %w", err)
	}
	return s.revokeWhere(ctx, owner, "targets @> $2::jsonb", string(t), actor)
}

// RevokeTag revokes every active link of the owner tagged tag and returns
// their ids.
func (s *Store) RevokeTag(ctx context.Context, owner link.Owner, tag string, actor events.Actor) ([]string, error) {
	return s.revokeWhere(ctx, owner, "tags @> ARRAY[$2::text]", tag, actor)
}

// RevokeRecipient revokes every active link of the owner whose OTP
// recipient is recipient (normalised) and returns their ids.
func (s *Store) RevokeRecipient(ctx context.Context, owner link.Owner, recipient string, actor events.Actor) ([]string, error) {
	return s.revokeWhere(ctx, owner, "recipient = $2", recipient, actor)
}

// revokeWhere revokes, in one transaction, every active link of the owner
// that cond (SQL on links, its argument $2) matches, and returns their ids.
func (s *Store) revokeWhere(ctx context.Context, owner link.Owner, cond string, arg any, actor events.Actor) ([]string, error) {
	var revoked []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id::text FROM links WHERE owner_id = $1 AND `+cond+` AND status = 'active'
			ORDER BY id FOR UPDATE`, owner.ID, arg)
		if err != nil {
			return fmt.Errorf("lock links to revoke: %w", err)
		}
		revoked, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("lock links to revoke: %w", err)
		}
		return revokeLocked(ctx, tx, owner, revoked, actor)
	})
	return revoked, err
}

// revokeLocked revokes ids, links the transaction has locked: their
// sessions end and each gets its link.revoked event.
func revokeLocked(ctx context.Context, tx pgx.Tx, owner link.Owner, ids []string, actor events.Actor) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE links SET status = 'revoked', revoked_at = now(), updated_at = now(),
		ended_at = coalesce(ended_at, now()) WHERE id = ANY($1::text[]::uuid[])`, ids); err != nil {
		return fmt.Errorf("revoke links: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM access_sessions WHERE link_id = ANY($1::text[]::uuid[])`, ids); err != nil {
		return fmt.Errorf("end sessions: %w", err)
	}
	evs := make([]events.Event, 0, len(ids))
	for _, id := range ids {
		evs = append(evs, events.Must(events.LinkRevoked, owner.ID, id, actor, nil))
	}
	return insertEvents(ctx, tx, evs...)
}

// LinkByTokenHash finds a link by its token's lookup hash, whatever its status.
func (s *Store) LinkByTokenHash(ctx context.Context, hash []byte) (link.Link, error) {
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM links WHERE token_hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Link{}, apperr.LinkNotFound()
	}
	if err != nil {
		return link.Link{}, fmt.Errorf("resolve link: %w", err)
	}
	return l, nil
}

// OwnedLinks returns those of ids that belong to the owner.
func (s *Store) OwnedLinks(ctx context.Context, ownerID string, ids []string) ([]link.Link, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+linkColumns+` FROM links WHERE owner_id = $1 AND id = ANY($2::text[]::uuid[])`, ownerID, ids)
	if err != nil {
		return nil, fmt.Errorf("owned links: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (link.Link, error) { return scanLink(r) })
}

// isUUID screens ids before they reach a uuid column, so a malformed id is
// a plain "not found" rather than a driver error.
func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// networksArg is a link's networks as a parameter: NULL for none, so the
// access statements' check is one IS NULL for every link without any.
func networksArg(p []netip.Prefix) any {
	if len(p) == 0 {
		return nil
	}
	return p
}

// clientIPArg is the recipient's address as the access statements'
// parameter: NULL when it is not an address, which no network contains.
func clientIPArg(actor events.Actor) any {
	ip, err := netip.ParseAddr(actor.IP)
	if err != nil {
		return nil
	}
	return ip.Unmap().WithZone("")
}

// networkCheck is the condition on a links row (its columns named as in
// the statement) that the client, whose address is parameter p, may use it
// now: from inside its networks, and not before its start (an owner may
// move either while a request is on its way; the service has told the
// recipient why before it gets here).
func networkCheck(p int) string {
	return fmt.Sprintf("(allowed_networks IS NULL OR $%d::inet <<= ANY (allowed_networks)) AND (not_before IS NULL OR not_before <= now())", p)
}

// withOwnedLink runs fn in a transaction holding the row of one of the
// owner's links; another owner's link, or a malformed id, is LinkNotFound.
func (s *Store) withOwnedLink(ctx context.Context, ownerID, id string, fn func(tx pgx.Tx, l link.Link) error) error {
	if !isUUID(id) {
		return apperr.LinkNotFound()
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		l, err := scanLink(tx.QueryRow(ctx, `SELECT `+linkColumns+` FROM links WHERE id = $1 AND owner_id = $2 FOR UPDATE`, id, ownerID))
		if errors.Is(err, pgx.ErrNoRows) {
			return apperr.LinkNotFound()
		}
		if err != nil {
			return fmt.Errorf("lock link: %w", err)
		}
		return fn(tx, l)
	})
}

// UpdateLink changes one of the owner's links in a transaction that holds
// its row: apply gets the link as it is, under the lock (an access counted
// meanwhile is in it), and returns it as it should be with the fields it
// changed. A change writes the row and link.updated; no change writes
// nothing. A link that ends by it keeps when it ended (the purge clock); one
// that comes back has none.
func (s *Store) UpdateLink(ctx context.Context, ownerID, id string, actor events.Actor,
	apply func(link.Link) (link.Link, []string, error)) (link.Link, error) {
	var out link.Link
	err := s.withOwnedLink(ctx, ownerID, id, func(tx pgx.Tx, l link.Link) error {
		stored := l.Status
		l.Status = link.EffectiveStatus(l.Status, l.ExpiresAt, time.Now())
		nl, changed, err := apply(l)
		if err != nil {
			return err
		}
		out = nl
		if len(changed) == 0 {
			return nil
		}
		status := nl.Status
		if status == link.StatusExpired && stored == link.StatusActive {
			// Past its expiry but not yet swept: the reaper expires it,
			// with its link.expired, as it does every other link.
			status = link.StatusActive
		}
		err = tx.QueryRow(ctx, `UPDATE links SET expires_at = $2, max_access_count = $3, title = $4, message = $5,
			allowed_networks = $6, status = $7, tags = $8, not_before = $9, otp_policy = $10, updated_at = now(),
			ended_at = CASE WHEN $7 = 'active' THEN NULL ELSE coalesce(ended_at, now()) END
			WHERE id = $1 RETURNING updated_at`,
			id, nl.ExpiresAt, nl.MaxAccessCount, nl.Title, nl.Message, networksArg(nl.AllowedNetworks), status, tagsArg(nl.Tags), nl.NotBefore,
			nl.OTPPolicy).Scan(&out.UpdatedAt)
		if err != nil {
			return fmt.Errorf("update link: %w", err)
		}
		if slices.Contains(changed, "otp_policy") {
			// Codes out were sent under the old terms (their length on
			// the recipient's page, their attempts): they end, and the
			// next code follows the new policy.
			if _, err := tx.Exec(ctx, `UPDATE otp_challenges SET status = 'expired', updated_at = now()
				WHERE link_id = $1 AND status IN ('pending', 'sent')`, id); err != nil {
				return fmt.Errorf("end codes under the old policy: %w", err)
			}
		}
		if !nl.ExpiresAt.Equal(l.ExpiresAt) {
			// Reminders still to come keep their distance from the expiry.
			if _, err := tx.Exec(ctx, `UPDATE notifications SET remind_at = remind_at + ($2::timestamptz - $3::timestamptz)
				WHERE link_id = $1 AND remind_at IS NOT NULL`, id, nl.ExpiresAt, l.ExpiresAt); err != nil {
				return fmt.Errorf("move reminders: %w", err)
			}
		}
		return insertEvents(ctx, tx, events.Must(events.LinkUpdated, ownerID, id, actor,
			events.UpdatedData{Changed: changed, Status: nl.Status}))
	})
	return out, err
}

// RestoreLinks brings back the owner's revoked links among ids, in one
// transaction holding their rows (locked in id order, as every writer
// that locks several links does): decide checks each (the window, that
// it is revoked) and names the status it returns to, or refuses it.
// Refused maps each id not restored to why (LinkNotFound for ids that
// are not the owner's). Nothing was kept from the revocation to undo but
// the status: sessions ended then stay ended, the URL is the same.
func (s *Store) RestoreLinks(ctx context.Context, ownerID string, ids []string, actor events.Actor,
	decide func(link.Link) (string, error)) (restored []link.Link, refused map[string]error, err error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if isUUID(id) {
			valid = append(valid, id)
		}
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		restored, refused = nil, make(map[string]error, len(ids))
		rows, err := tx.Query(ctx, `SELECT `+linkColumns+` FROM links WHERE owner_id = $1 AND id = ANY($2::text[]::uuid[])
			ORDER BY id FOR UPDATE`, ownerID, valid)
		if err != nil {
			return fmt.Errorf("lock links: %w", err)
		}
		found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (link.Link, error) { return scanLink(r) })
		if err != nil {
			return fmt.Errorf("lock links: %w", err)
		}
		seen := make(map[string]bool, len(found))
		var evs []events.Event
		for _, l := range found {
			seen[l.ID] = true
			status, err := decide(l)
			if err != nil {
				refused[l.ID] = err
				continue
			}
			err = tx.QueryRow(ctx, `UPDATE links SET status = $2, revoked_at = NULL, updated_at = now(),
				ended_at = CASE WHEN $2 = 'active' THEN NULL ELSE ended_at END
				WHERE id = $1 RETURNING updated_at`, l.ID, status).Scan(&l.UpdatedAt)
			if err != nil {
				return fmt.Errorf("restore link: %w", err)
			}
			l.Status, l.RevokedAt = status, nil
			restored = append(restored, l)
			evs = append(evs, events.Must(events.LinkRestored, ownerID, l.ID, actor,
				events.RestoredData{Status: link.EffectiveStatus(status, l.ExpiresAt, time.Now())}))
		}
		for _, id := range ids {
			if !seen[id] {
				refused[id] = apperr.LinkNotFound()
			}
		}
		return insertEvents(ctx, tx, evs...)
	})
	return restored, refused, err
}

// tagsArg is a link's tags as a parameter: NULL for none, so untagged
// links stay out of the tags index.
func tagsArg(t []string) any {
	if len(t) == 0 {
		return nil
	}
	return t
}
