package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/link"
)

// keysChannel is notified whenever an API key is revoked.
const keysChannel = "sharelinks_api_keys"

// CachedKeys is a Store whose API-key lookups are remembered, so an owner
// request does not pay a query for its key. Revocation still takes effect
// at once everywhere: RevokeKey notifies keysChannel in its transaction,
// every process listens and forgets everything it remembered, and while
// the listener is not connected nothing is remembered at all.
type CachedKeys struct {
	*Store
	log *slog.Logger
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]cachedOwner
	gen     uint64 // bumped by every forget; a lookup older than it is not kept
	live    bool   // the listener is connected
}

type cachedOwner struct {
	owner link.Owner
	until time.Time
}

// WithKeyCache wraps store, remembering each key for ttl; call Run to
// listen for revocations (until it does, lookups go to Postgres).
func WithKeyCache(store *Store, log *slog.Logger, ttl time.Duration) *CachedKeys {
	return &CachedKeys{Store: store, log: log, ttl: ttl, max: 10_000, entries: map[string]cachedOwner{}}
}

// OwnerByKeyHash answers from memory when it can. Unknown and revoked keys
// are never remembered (a flood of bad keys must not fill memory).
func (c *CachedKeys) OwnerByKeyHash(ctx context.Context, hash []byte) (link.Owner, error) {
	k := string(hash)
	c.mu.Lock()
	e, ok := c.entries[k]
	gen, live := c.gen, c.live
	c.mu.Unlock()
	if ok && time.Now().Before(e.until) {
		return e.owner, nil
	}
	o, err := c.Store.OwnerByKeyHash(ctx, hash)
	if err != nil || !live {
		return o, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A revocation seen while we were asking may concern this very key.
	if c.gen == gen && c.live {
		if len(c.entries) >= c.max {
			clear(c.entries)
		}
		c.entries[k] = cachedOwner{owner: o, until: time.Now().Add(c.ttl)}
	}
	return o, nil
}

// Run listens for revocations until ctx ends, reconnecting after errors.
func (c *CachedKeys) Run(ctx context.Context) error {
	for {
		err := c.listen(ctx)
		c.forget(false)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("API key cache: revocation listener lost; keys are looked up in Postgres until it is back", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (c *CachedKeys) listen(ctx context.Context) error {
	// Its own connection: a LISTEN must stay on one session for good,
	// which a pooled connection does not.
	conn, err := pgx.ConnectConfig(ctx, c.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+keysChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	c.forget(true)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		c.forget(true)
	}
}

// forget drops every remembered key; live says whether to remember again.
func (c *CachedKeys) forget(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.gen++
	c.live = live
}
