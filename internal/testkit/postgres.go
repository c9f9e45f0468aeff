// Package testkit holds helpers for tests that talk to real services: a fresh
// Postgres database per test package, in-process NATS JetStream servers, and
// polling with a deadline. Production code never imports it.
package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// LocalPostgresURL is the server tried when TEST_DATABASE_URL is not set: the
// machine's own PostgreSQL with trust auth for user postgres.
const LocalPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// maxIdentLen is PostgreSQL's NAMEDATALEN-1: longer names are silently truncated.
const maxIdentLen = 63

// NewDatabase creates a fresh, uniquely named database (prefix plus a random
// suffix) on the server named by TEST_DATABASE_URL, else on LocalPostgresURL if
// that answers, and returns its URL and a function that drops it (closing any
// connections still open). Meant for TestMain, which has no testing.TB.
func NewDatabase(ctx context.Context, prefix string) (dbURL string, drop func(context.Context) error, err error) {
	admin, err := adminURL(ctx)
	if err != nil {
		return "", nil, err
	}
	name, err := databaseName(prefix)
	if err != nil {
		return "", nil, err
	}
	dbURL, err = withDatabase(admin, name)
	if err != nil {
		return "", nil, err
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("testkit: connect to %s: %w", redact(admin), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("testkit: create database %s on %s: %w", name, redact(admin), err)
	}
	drop = func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return fmt.Errorf("testkit: connect to drop database %s: %w", name, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		// FORCE: a pool the test forgot to close must not leave databases behind.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("testkit: drop database %s: %w", name, err)
		}
		return nil
	}
	return dbURL, drop, nil
}

// Database creates a fresh database named after the test (see NewDatabase),
// drops it when the test ends, and returns its URL. It fails the test if no
// server can be reached.
func Database(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbURL, drop, err := NewDatabase(ctx, tb.Name())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := drop(ctx); err != nil {
			tb.Error(err)
		}
	})
	return dbURL
}

// adminURL picks the server to create test databases on.
func adminURL(ctx context.Context) (string, error) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u, nil
	}
	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(pingCtx, LocalPostgresURL)
	if err != nil {
		return "", fmt.Errorf("testkit: no test Postgres: TEST_DATABASE_URL is not set and %s does not answer (%v); run `make test` or export TEST_DATABASE_URL=$(go run ./cmd/devstack testdb)", redact(LocalPostgresURL), oneLine(err))
	}
	_ = conn.Close(ctx)
	return LocalPostgresURL, nil
}

// databaseName turns prefix (often a test name) into a valid, unique identifier.
func databaseName(prefix string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	p := strings.Trim(b.String(), "_")
	if p == "" || (p[0] >= '0' && p[0] <= '9') {
		p = "t_" + p
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("testkit: random database name: %w", err)
	}
	suffix := "_" + hex.EncodeToString(rnd[:])
	if len(p) > maxIdentLen-len(suffix) {
		p = p[:maxIdentLen-len(suffix)]
	}
	return p + suffix, nil
}

// withDatabase returns conn (a URL or a key=value DSN) pointing at database name.
func withDatabase(conn, name string) (string, error) {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err != nil {
			return "", fmt.Errorf("testkit: parse TEST_DATABASE_URL: %w", errors.Unwrap(err))
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// key=value form: a later key wins.
	return conn + " dbname=" + name, nil
}

// redact hides a password in a URL so it can go into test output.
func redact(conn string) string {
	u, err := url.Parse(conn)
	if err != nil || u.User == nil {
		return conn
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// DatabaseOutage takes the database a connection config names away, as a
// failover or a restart does: it is closed to new connections and every
// session on it is ended. The switch is thrown from a connection to the
// server's postgres database, since Postgres will not close the one a
// session is on. reopen lets connections in again; the test's cleanup
// reopens too, so the database can be dropped.
func DatabaseOutage(tb testing.TB, cfg *pgx.ConnConfig) (reopen func()) {
	tb.Helper()
	ctx := context.Background()
	admin := cfg.Copy()
	db := admin.Database
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		tb.Fatal(err)
	}
	allow := func(on bool) {
		tb.Helper()
		if _, err := conn.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS %t`, pgx.Identifier{db}.Sanitize(), on)); err != nil {
			tb.Error(err)
		}
	}
	allow(false)
	tb.Cleanup(func() {
		allow(true)
		_ = conn.Close(ctx)
	})
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db); err != nil {
		tb.Fatal(err)
	}
	return func() { allow(true) }
}
