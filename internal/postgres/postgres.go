// Package postgres is the pgx v5 store: migrations embedded in the binary,
// one file per aggregate, driver errors translated to application errors.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Redact hides the password of a database URL for error messages.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(connection string)"
}

// Open connects a pool and checks the server answers, so a wrong
// DATABASE_URL stops the binary at start with a clear line.
func Open(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", Redact(dsn), err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, oneLine(fmt.Errorf("connect to %s: %w", Redact(dsn), err))
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, oneLine(fmt.Errorf("connect to %s: %w", Redact(dsn), err))
	}
	return pool, nil
}

// lineError prints its cause on one line (pgx lists each address tried on
// its own line) while keeping the chain for errors.Is/As.
type lineError struct{ err error }

func (e lineError) Error() string {
	return strings.Join(strings.Fields(strings.ReplaceAll(e.err.Error(), "\n", "; ")), " ")
}

func (e lineError) Unwrap() error { return e.err }

func oneLine(err error) error { return lineError{err} }

// Migrate applies the embedded migrations. tern holds an advisory lock, so
// concurrent callers serialise, and applied versions are skipped: idempotent.
func Migrate(ctx context.Context, dsn string) (from, to int32, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, oneLine(fmt.Errorf("connect to %s: %w", Redact(dsn), err))
	}
	defer conn.Close(ctx)
	m, err := migrate.NewMigrator(ctx, conn, "schema_version")
	if err != nil {
		return 0, 0, fmt.Errorf("migrator: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return 0, 0, fmt.Errorf("migrations fs: %w", err)
	}
	if err := m.LoadMigrations(sub); err != nil {
		return 0, 0, fmt.Errorf("load migrations: %w", err)
	}
	if from, err = m.GetCurrentVersion(ctx); err != nil {
		return 0, 0, fmt.Errorf("current schema version: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return from, 0, fmt.Errorf("migrate: %w", err)
	}
	to, err = m.GetCurrentVersion(ctx)
	return from, to, err
}

// isUniqueViolation reports a unique-constraint error.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation
}

// Unavailable reports whether err means Postgres could not take the work
// now, so the same request may succeed a moment later: the server cannot
// be reached or refuses connections, the connection broke, the server is
// shutting down or cancelled the statement, it ran out of connections or
// memory, or it rolled the transaction back to break a deadlock. Only
// errors pgx itself made qualify, so a mail server's refused connection
// in the same chain is not mistaken for the database's. The edge answers
// these 503 with Retry-After rather than 500, and consumers hold their
// event until the database is back rather than spend its deliveries.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false // the caller went away: nothing to tell it
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true // whatever refused it: the server, the network, a full server
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgerrcode.IsConnectionException(pgErr.Code) || pgerrcode.IsOperatorIntervention(pgErr.Code) ||
			pgerrcode.IsInsufficientResources(pgErr.Code) || pgerrcode.IsTransactionRollback(pgErr.Code)
	}
	// pgconn's own errors for a connection that broke, timed out or was
	// closed under it (read or write failures, "conn closed") all carry
	// SafeToRetry; nothing else does.
	var connErr interface{ SafeToRetry() bool }
	return errors.As(err, &connErr)
}
