package testkit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNewDatabaseCreatesAndDrops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbURL, drop, err := NewDatabase(ctx, "testkit_new")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var name string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "testkit_new_") {
		t.Fatalf("database %q does not carry the prefix", name)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}

	// Drop while conn is still open: FORCE must close it rather than fail.
	if err := drop(ctx); err != nil {
		t.Fatal(err)
	}
	admin, err := adminURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close(ctx)
	var exists bool
	if err := ac.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after drop", name)
	}
}

func TestDatabaseIsFreshPerCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := Database(t), Database(t)
	if a == b {
		t.Fatalf("two calls gave the same database %s", a)
	}
	for _, u := range []string{a, b} {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n)
		_ = conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("fresh database %s has %d tables", u, n)
		}
	}
}

func TestNewDatabaseUnreachableServer(t *testing.T) {
	// t.Setenv forbids t.Parallel.
	port := FreePort(t)
	t.Setenv("TEST_DATABASE_URL", "postgres://someone:s3cr3t@127.0.0.1:"+itoa(port)+"/postgres?sslmode=disable&connect_timeout=2")
	_, _, err := NewDatabase(context.Background(), "x")
	if err == nil {
		t.Fatal("NewDatabase against a closed port succeeded")
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("error leaks the password: %v", err)
	}
	if !strings.Contains(err.Error(), itoa(port)) {
		t.Fatalf("error does not say which server: %v", err)
	}
}

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"TestFoo/sub_case#01", "", "9lives", strings.Repeat("x", 200)} {
		name, err := databaseName(prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(name) > maxIdentLen {
			t.Errorf("databaseName(%q) = %q: longer than %d", prefix, name, maxIdentLen)
		}
		if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("databaseName(%q) = %q: not a plain identifier", prefix, name)
		}
		if name[0] >= '0' && name[0] <= '9' {
			t.Errorf("databaseName(%q) = %q starts with a digit", prefix, name)
		}
	}
	a, _ := databaseName("same")
	b, _ := databaseName("same")
	if a == b {
		t.Errorf("two names for the same prefix collide: %s", a)
	}
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5/postgres?sslmode=disable", "postgres://u:p@h:5/db1?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/db1"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
	} {
		got, err := withDatabase(tc.in, "db1")
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
