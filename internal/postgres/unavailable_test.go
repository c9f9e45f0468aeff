package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// Unavailable tells the database's own outages (503 at the edge, held
// events in consumers) from everything else, including another server's
// refused connection and the caller going away.
func TestUnavailableIsTheDatabasesOutagesOnly(t *testing.T) {
	ctx := context.Background()
	port := testkit.FreePort(t) // nothing listens there
	_, connectErr := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?connect_timeout=2", port))
	_, dialErr := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	conn, err := pgx.Connect(ctx, testkit.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	var one int
	sqlErr := conn.QueryRow(ctx, `SELECT 1 / 0`).Scan(&one)
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	closedErr := conn.QueryRow(ctx, `SELECT 1`).Scan(&one)
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused connection to Postgres", fmt.Errorf("look up: %w", connectErr), true},
		{"query on a closed connection", closedErr, true},
		{"terminated by an administrator (57P01)", fmt.Errorf("x: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"too many connections (53300)", &pgconn.PgError{Code: "53300"}, true},
		{"deadlock (40P01)", &pgconn.PgError{Code: "40P01"}, true},
		{"division by zero (22012)", sqlErr, false},
		{"unique violation (23505)", &pgconn.PgError{Code: "23505"}, false},
		{"another server's refused connection", fmt.Errorf("smtp: %w", dialErr), false},
		{"the caller went away", fmt.Errorf("x: %w", context.Canceled), false},
		{"no rows", pgx.ErrNoRows, false},
		{"nil", nil, false},
		{"plain", errors.New("boom"), false},
	} {
		if tt.err == nil && tt.name != "nil" {
			t.Fatalf("%s: the setup produced no error", tt.name)
		}
		if got := postgres.Unavailable(tt.err); got != tt.want {
			t.Errorf("%s (%v): Unavailable = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
