package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
)

// KeyInfo describes an API key without its secret.
type KeyInfo struct {
	Prefix    string
	Owner     string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// CreateKey stores a key's hash for the named owner, creating the owner on
// first use.
func (s *Store) CreateKey(ctx context.Context, owner, prefix string, hash []byte) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ownerID string
		err := tx.QueryRow(ctx, `
			INSERT INTO owners (name) VALUES ($1)
			ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
			RETURNING id::text`, owner).Scan(&ownerID)
		if err != nil {
			return fmt.Errorf("upsert owner: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO api_keys (owner_id, prefix, key_hash) VALUES ($1, $2, $3)`, ownerID, prefix, hash)
		if isUniqueViolation(err) {
			return apperr.New(apperr.Conflict, "key_exists", "a key with this prefix exists; try again")
		}
		if err != nil {
			return fmt.Errorf("insert api key: %w", err)
		}
		return nil
	})
}

// ListKeys lists all keys, newest first.
func (s *Store) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT k.prefix, o.name, k.created_at, k.revoked_at
		FROM api_keys k JOIN owners o ON o.id = k.owner_id
		ORDER BY k.created_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyInfo, error) {
		var k KeyInfo
		err := r.Scan(&k.Prefix, &k.Owner, &k.CreatedAt, &k.RevokedAt)
		return k, err
	})
}

// RevokeKey revokes the key with the given prefix and tells every api
// process to forget the keys it remembers (see CachedKeys).
func (s *Store) RevokeKey(ctx context.Context, prefix string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL`, prefix)
		if err != nil {
			return fmt.Errorf("revoke key: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return apperr.New(apperr.NotFound, "key_not_found", "no active key with prefix %s", prefix)
		}
		// Delivered at commit, so no process can re-read the key as valid
		// after forgetting it.
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, keysChannel); err != nil {
			return fmt.Errorf("notify key revocation: %w", err)
		}
		return nil
	})
}

// OwnerByKeyHash authenticates an API key by its hash.
func (s *Store) OwnerByKeyHash(ctx context.Context, hash []byte) (link.Owner, error) {
	var o link.Owner
	var policy *link.OwnerPolicy
	err := s.pool.QueryRow(ctx, `
		SELECT o.id::text, o.name, k.prefix, o.policy
		FROM api_keys k JOIN owners o ON o.id = k.owner_id
		WHERE k.key_hash = $1 AND k.revoked_at IS NULL`, hash).Scan(&o.ID, &o.Name, &o.KeyPrefix, &policy)
	if errors.Is(err, pgx.ErrNoRows) {
		return link.Owner{}, apperr.New(apperr.Unauthorized, "invalid_api_key", "the API key is missing, unknown or revoked")
	}
	if err != nil {
		return link.Owner{}, fmt.Errorf("look up api key: %w", err)
	}
	if policy != nil {
		o.Policy = *policy
	}
	return o, nil
}

// SetOwnerPolicy replaces the named owner's policy (an empty one clears
// it) and, as a key revocation does, tells every api process to forget
// the owners it remembers, so the next request of the owner runs under it.
func (s *Store) SetOwnerPolicy(ctx context.Context, owner string, p link.OwnerPolicy) error {
	var arg *link.OwnerPolicy
	if p != (link.OwnerPolicy{}) {
		arg = &p
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE owners SET policy = $2 WHERE name = $1`, owner, arg)
		if err != nil {
			return fmt.Errorf("set owner policy: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return apperr.New(apperr.NotFound, "owner_not_found", "no owner named %q (keys create --owner makes one)", owner)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, keysChannel); err != nil {
			return fmt.Errorf("notify policy change: %w", err)
		}
		return nil
	})
}

// OwnerPolicy returns the named owner's policy.
func (s *Store) OwnerPolicy(ctx context.Context, owner string) (link.OwnerPolicy, error) {
	var p *link.OwnerPolicy
	err := s.pool.QueryRow(ctx, `SELECT policy FROM owners WHERE name = $1`, owner).Scan(&p)
	if errors.Is(err, pgx.ErrNoRows) {
		return link.OwnerPolicy{}, apperr.New(apperr.NotFound, "owner_not_found", "no owner named %q (keys create --owner makes one)", owner)
	}
	if err != nil {
		return link.OwnerPolicy{}, fmt.Errorf("read owner policy: %w", err)
	}
	if p == nil {
		return link.OwnerPolicy{}, nil
	}
	return *p, nil
}
