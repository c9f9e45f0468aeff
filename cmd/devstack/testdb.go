package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sharelinks/sharelinks/internal/devstack"
)

// localTestURL is the machine's own PostgreSQL, used by tests when it answers.
const localTestURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// testDB prints on stdout the URL of a Postgres server that tests may create
// databases on: TEST_DATABASE_URL if set, else the local server on 5432 if it
// answers, else a private cluster under data/testpg, started and left running.
func testDB(ctx context.Context, logger *slog.Logger, data string) error {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		logger.Info("tests use TEST_DATABASE_URL", "url", redactURL(u))
		fmt.Println(u)
		return nil
	}
	if err := ping(ctx, localTestURL, 3*time.Second); err == nil {
		logger.Info("tests use the local Postgres", "url", localTestURL)
		fmt.Println(localTestURL)
		return nil
	} else {
		logger.Info("no local Postgres on 127.0.0.1:5432; using a private cluster", "reason", err.Error())
	}
	dbURL, _, err := devstack.StartPostgres(ctx, filepath.Join(data, "testpg"), logger)
	if err != nil {
		return err
	}
	// Tests create their own databases; hand them the maintenance database.
	admin, err := withDatabase(dbURL, "postgres")
	if err != nil {
		return err
	}
	logger.Info("tests use the private cluster (left running; `go run ./cmd/devstack testdb-stop` stops it)", "url", admin)
	fmt.Println(admin)
	return nil
}

// testDBStop stops the private test cluster, if there is one.
func testDBStop(ctx context.Context, logger *slog.Logger, data string) error {
	return devstack.StopPostgres(ctx, filepath.Join(data, "testpg"), logger)
}

// ping connects to the server at dbURL and closes the connection again.
func ping(ctx context.Context, dbURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// withDatabase returns the URL dbURL with its database replaced by name.
func withDatabase(dbURL, name string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// redactURL hides the password of a database URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
