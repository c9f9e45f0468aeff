package devstack

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// requirePGBinaries skips when this machine has no PostgreSQL server binaries.
func requirePGBinaries(t *testing.T) {
	t.Helper()
	if _, err := findBinDir("", ""); err != nil {
		t.Skipf("no PostgreSQL server binaries: %v", err)
	}
}

// reachableTempDir is a temp dir that an unprivileged user can traverse, unlike
// t.TempDir() whose parent is 0700: as root it keeps the cluster in place.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "devstack-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func queryString(t *testing.T, ctx context.Context, url, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartPostgresInitReuseRestart(t *testing.T) {
	t.Parallel()
	requirePGBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(reachableTempDir(t), "pg")
	logger := testLogger(t)

	url, stop, err := StartPostgres(ctx, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })

	if got := queryString(t, ctx, url, "SELECT current_database()"); got != DevDatabase {
		t.Fatalf("current_database() = %q, want %q", got, DevDatabase)
	}
	if got := queryString(t, ctx, url, "SELECT current_setting('data_directory')"); got != filepath.Join(dir, "data") {
		t.Fatalf("data_directory = %q, want %q", got, filepath.Join(dir, "data"))
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(dir, "data"))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Fatal("running as root, but the data dir is owned by root")
		}
		t.Logf("root: cluster owned by %s", userName(fi.Sys().(*syscall.Stat_t).Uid))
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	// Already running: the second start reuses the server as it is.
	url2, _, err := StartPostgres(ctx, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	if url2 != url {
		t.Fatalf("second start while running gave %q, want the running server %q", url2, url)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := pgx.Connect(ctx, url); err == nil {
		_ = c.Close(ctx)
		t.Fatal("server still answers after stop")
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}

	// Stopped: the next start reuses the data.
	url3, stop3, err := StartPostgres(ctx, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop3() })
	if got := queryString(t, ctx, url3, "SELECT v FROM kept"); got != "still here" {
		t.Fatalf("after restart kept.v = %q", got)
	}
	if err := StopPostgres(ctx, dir, logger); err != nil {
		t.Fatal(err)
	}
	if c, err := pgx.Connect(ctx, url3); err == nil {
		_ = c.Close(ctx)
		t.Fatal("server still answers after StopPostgres")
	}
}

func TestStartPostgresUnreachableDirAsRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root drops privileges and may need the temp-dir fallback")
	}
	requirePGBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// t.TempDir's parent is 0700 root: no unprivileged user can get through it.
	dir := filepath.Join(t.TempDir(), "pg")
	abs, _ := filepath.Abs(dir)
	t.Cleanup(func() { _ = os.RemoveAll(fallbackBase(abs)) })

	url, stop, err := StartPostgres(ctx, dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	want := filepath.Join(fallbackBase(abs), "data")
	if got := queryString(t, ctx, url, "SELECT current_setting('data_directory')"); got != want {
		t.Fatalf("data_directory = %q, want fallback %q", got, want)
	}
	if err := StopPostgres(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := pgx.Connect(ctx, url); err == nil {
		_ = c.Close(ctx)
		t.Fatal("server still answers after StopPostgres on the original dir")
	}
}

func TestStopPostgresWithoutCluster(t *testing.T) {
	t.Parallel()
	if err := StopPostgres(context.Background(), t.TempDir(), nil); err != nil {
		t.Fatalf("StopPostgres on an empty dir: %v", err)
	}
}

func TestFindBinDirVersionMismatch(t *testing.T) {
	t.Parallel()
	requirePGBinaries(t)
	_, err := findBinDir("7.4", "/somewhere/data")
	if err == nil || !strings.Contains(err.Error(), "made by PostgreSQL 7.4") {
		t.Fatalf("findBinDir(7.4) error = %v, want a version mismatch", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error spans lines: %q", err)
	}
}

func TestLastLines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 2, "no output"},
		{"a\n\nb\nc\n\n", 2, "b | c"},
		{"only\n", 3, "only"},
	} {
		if got := lastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
