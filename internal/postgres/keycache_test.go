package postgres_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// newKey stores a fresh API key for owner and returns it with its prefix.
func newKey(t *testing.T, store *postgres.Store, owner string) (key, prefix string) {
	t.Helper()
	key = secret.NewToken(link.APIKeyPrefix)
	prefix = key[:len(link.APIKeyPrefix)+8]
	if err := store.CreateKey(context.Background(), owner, prefix, secret.APIKeyHash(key)); err != nil {
		t.Fatal(err)
	}
	return key, prefix
}

func TestKeyCacheForgetsRevokedKeysEverywhere(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, testkit.MigratedDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := postgres.NewStore(pool, nil)
	a, aPrefix := newKey(t, store, "acme")
	_, bPrefix := newKey(t, store, "acme")
	c, cPrefix := newKey(t, store, "other")

	cache := postgres.WithKeyCache(store, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute)
	done := make(chan struct{})
	go func() { defer close(done); _ = cache.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, 5*time.Second, cache.Listening, "revocation listener connected")

	valid := func(key string) bool {
		_, err := cache.OwnerByKeyHash(ctx, secret.APIKeyHash(key))
		if err != nil && apperr.CodeOf(err) != apperr.Unauthorized {
			t.Fatalf("lookup: %v", err)
		}
		return err == nil
	}
	revokeBehindTheBack := func(prefix string) {
		if _, err := pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE prefix = $1`, prefix); err != nil {
			t.Fatal(err)
		}
	}

	if !valid(a) {
		t.Fatal("fresh key refused")
	}
	// Revoked without the notification: still accepted, so it came from memory.
	revokeBehindTheBack(aPrefix)
	if !valid(a) {
		t.Fatal("a remembered key was looked up again")
	}
	// Any revocation through RevokeKey (another process, the CLI) makes
	// every cache forget, so the next lookup sees a's revocation.
	if err := store.RevokeKey(ctx, bPrefix); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 3*time.Second, func() bool { return !valid(a) }, "revoked key refused after NOTIFY")

	// Losing the listener means forgetting and not remembering until it is
	// back: a revocation it could miss meanwhile must not be masked.
	testkit.Eventually(t, 3*time.Second, func() bool { return valid(c) }, "third key accepted")
	revokeBehindTheBack(cPrefix)
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 3*time.Second, func() bool { return !valid(c) }, "key refused once the listener is lost")
	testkit.Eventually(t, 5*time.Second, cache.Listening, "listener reconnected")
}
