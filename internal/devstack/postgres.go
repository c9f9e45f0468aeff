package devstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// pgSuperuser is the role initdb creates; trust auth lets it in without a password.
	pgSuperuser = "postgres"
	// DevDatabase is the database StartPostgres creates and returns a URL for.
	DevDatabase = "sharelinks"
	// pgWait bounds pg_ctl start/stop (passed as -t) and our own waits around them.
	pgWait = 60 * time.Second
	// pgDebianRoot is where Debian and Ubuntu install each PostgreSQL major version.
	pgDebianRoot = "/usr/lib/postgresql"
)

// clusterConf is appended to postgresql.conf by initdb time. The cluster is
// throwaway (dev data, test databases), so durability is traded for speed: a
// crash of the process loses nothing, only a crash of the machine could.
// The unix socket is off because the compiled-in socket directory
// (/var/run/postgresql on Debian) is not writable by the user we run as, and
// socket paths under a deep checkout can exceed the 107-byte limit.
const clusterConf = `
# Added by sharelinks devstack.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
`

// cluster is a private PostgreSQL cluster: base holds data/ (PGDATA) and the
// server log.
type cluster struct {
	base    string
	data    string
	logFile string
	bin     string              // directory holding initdb and pg_ctl
	cred    *syscall.Credential // nil unless we are root and must drop privileges
	user    string              // who runs the server, for messages
	logger  *slog.Logger
}

// StartPostgres makes sure a private PostgreSQL cluster under dir is running and
// has the database "sharelinks", and returns a URL for that database (user
// postgres, trust auth, 127.0.0.1 on a free port).
//
// The first call runs initdb; later calls reuse the data, and if the server is
// already running (say, left by an earlier run) it is used as it is. Binaries are
// found on PATH, else through `pg_config --bindir`, else under
// /usr/lib/postgresql/*/bin (highest version, or the one the data was made by).
// PostgreSQL refuses to run as root, so as root the cluster is owned and run by an
// unprivileged user: the owner of an existing data dir, else the non-root owner
// of dir, else "postgres", else "nobody". If that user cannot reach dir, the
// cluster lives under os.TempDir() instead, at a path derived from dir.
//
// stop shuts the server down (pg_ctl stop -m fast), whoever started it.
func StartPostgres(ctx context.Context, dir string, logger *slog.Logger) (url string, stop func() error, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c, err := openCluster(dir, logger)
	if err != nil {
		return "", nil, err
	}
	port, err := c.ensureRunning(ctx)
	if err != nil {
		return "", nil, err
	}
	if err := ensureDatabase(ctx, clusterURL(port, "postgres"), DevDatabase); err != nil {
		return "", nil, fmt.Errorf("private Postgres in %s: %w", c.data, err)
	}
	stop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), pgWait+5*time.Second)
		defer cancel()
		return c.stop(ctx)
	}
	return clusterURL(port, DevDatabase), stop, nil
}

// StopPostgres stops the private cluster under dir if it is running. A dir
// without a cluster, or a stopped cluster, is not an error.
func StopPostgres(ctx context.Context, dir string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("private Postgres: resolve %s: %w", dir, err)
	}
	// The cluster may live in the temp-dir fallback; look there too.
	for _, b := range []string{base, fallbackBase(base)} {
		if _, err := os.Stat(filepath.Join(b, "data", "PG_VERSION")); err != nil {
			continue
		}
		c, err := openCluster(dir, logger)
		if err != nil {
			return err
		}
		return c.stop(ctx)
	}
	return nil
}

func clusterURL(port int, db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgSuperuser, port, db)
}

// openCluster resolves the directories, binaries and user for the cluster under dir.
func openCluster(dir string, logger *slog.Logger) (*cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("private Postgres: resolve %s: %w", dir, err)
	}
	c := &cluster{base: abs, logger: logger}
	if os.Geteuid() == 0 {
		if err := c.chooseUnprivileged(); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(c.base, 0o755); err != nil {
		return nil, fmt.Errorf("private Postgres: create %s: %w", c.base, err)
	}
	c.data = filepath.Join(c.base, "data")
	c.logFile = filepath.Join(c.base, "postgres.log")

	var want string // major version of existing data, if any
	if b, err := os.ReadFile(filepath.Join(c.data, "PG_VERSION")); err == nil {
		want = strings.TrimSpace(string(b))
	}
	c.bin, err = findBinDir(want, c.data)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// chooseUnprivileged picks the user that owns and runs the cluster when we are
// root, prepares c.base for it, and moves c.base to the temp-dir fallback when
// the user cannot reach the requested directory.
func (c *cluster) chooseUnprivileged() error {
	for _, base := range []string{c.base, fallbackBase(c.base)} {
		uid, gid, name, err := clusterOwner(base)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(base, 0o755); err != nil {
			return fmt.Errorf("private Postgres: create %s: %w", base, err)
		}
		if blocked := unreachable(base, uid, gid); blocked != "" {
			c.logger.Info("private Postgres: directory not reachable by the server user; using a temp dir instead",
				"dir", base, "user", name, "blocked_at", blocked)
			continue
		}
		if err := os.Chown(base, int(uid), int(gid)); err != nil {
			return fmt.Errorf("private Postgres: give %s to user %s: %w", base, name, err)
		}
		c.base = base
		c.user = name
		c.cred = &syscall.Credential{Uid: uid, Gid: gid}
		return nil
	}
	return fmt.Errorf("private Postgres: neither %s nor %s is reachable by an unprivileged user; run as a normal user or pick another directory",
		c.base, fallbackBase(c.base))
}

// fallbackBase is where the cluster for base lives when its own path is not
// reachable by the server user: stable per base, so reuse still works.
func fallbackBase(base string) string {
	sum := sha256.Sum256([]byte(base))
	return filepath.Join(os.TempDir(), fmt.Sprintf("sharelinks-pg-%x", sum[:6]))
}

// clusterOwner decides which user runs a cluster under base (root case only).
func clusterOwner(base string) (uid, gid uint32, name string, err error) {
	data := filepath.Join(base, "data")
	if st, ok := statOwner(data); ok {
		if st.Uid == 0 {
			return 0, 0, "", fmt.Errorf("private Postgres: data dir %s is owned by root and PostgreSQL will not run as root; remove it or chown it to an unprivileged user", data)
		}
		return st.Uid, st.Gid, userName(st.Uid), nil
	}
	// A checkout owned by a developer (run with sudo): keep files theirs.
	for p := base; ; p = filepath.Dir(p) {
		if st, ok := statOwner(p); ok {
			if st.Uid != 0 {
				return st.Uid, st.Gid, userName(st.Uid), nil
			}
			break
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	var tried []string
	for _, n := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(n)
		if err != nil {
			tried = append(tried, n)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			tried = append(tried, n)
			continue
		}
		return uint32(uid), uint32(gid), n, nil
	}
	return 0, 0, "", fmt.Errorf("private Postgres: running as root and found no unprivileged user to run the server (tried the owner of %s, %s)", base, strings.Join(tried, ", "))
}

func statOwner(path string) (*syscall.Stat_t, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return st, ok
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

// unreachable returns the first ancestor of path (path excluded, since we chown
// it) that uid/gid cannot search, or "" if every one can be passed. It looks at
// mode bits only (not supplementary groups or ACLs), which errs on the side of
// the fallback.
func unreachable(path string, uid, gid uint32) string {
	for p := filepath.Dir(path); ; p = filepath.Dir(p) {
		st, ok := statOwner(p)
		if !ok {
			return p
		}
		mode := st.Mode
		var can bool
		switch {
		case st.Uid == uid:
			can = mode&0o100 != 0
		case st.Gid == gid:
			can = mode&0o010 != 0
		default:
			can = mode&0o001 != 0
		}
		if !can {
			return p
		}
		if p == filepath.Dir(p) {
			return ""
		}
	}
}

// findBinDir finds a directory holding initdb and pg_ctl. want, if not empty, is
// the major version an existing data dir needs.
func findBinDir(want, data string) (string, error) {
	type candidate struct{ dir, from string }
	var cands []candidate
	var tried []string

	if p, err := exec.LookPath("initdb"); err == nil {
		cands = append(cands, candidate{filepath.Dir(p), "PATH"})
	} else {
		tried = append(tried, "initdb not on PATH")
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		cands = append(cands, candidate{string(bytes.TrimSpace(out)), "pg_config --bindir"})
	} else {
		tried = append(tried, "pg_config --bindir failed")
	}
	debian := debianBinDirs()
	for _, d := range debian {
		cands = append(cands, candidate{d, pgDebianRoot})
	}
	if len(debian) == 0 {
		tried = append(tried, "no "+pgDebianRoot+"/*/bin")
	}

	var versions []string
	for _, c := range cands {
		if !hasTools(c.dir) {
			tried = append(tried, fmt.Sprintf("%s (from %s) lacks initdb or pg_ctl", c.dir, c.from))
			continue
		}
		if want == "" {
			return c.dir, nil
		}
		v, err := majorVersion(c.dir)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		if v == want {
			return c.dir, nil
		}
		versions = append(versions, fmt.Sprintf("%s in %s", v, c.dir))
	}
	if want != "" && len(versions) > 0 {
		return "", fmt.Errorf("private Postgres: data in %s was made by PostgreSQL %s but only found PostgreSQL %s; install version %s or remove %s",
			data, want, strings.Join(versions, ", "), want, data)
	}
	return "", fmt.Errorf("private Postgres: no initdb/pg_ctl found (%s); install the PostgreSQL server package (Debian: postgresql)", strings.Join(tried, "; "))
}

// debianBinDirs lists /usr/lib/postgresql/<version>/bin, highest version first.
func debianBinDirs() []string {
	entries, err := os.ReadDir(pgDebianRoot)
	if err != nil {
		return nil
	}
	type ver struct {
		dir        string
		major, min int
	}
	var vs []ver
	for _, e := range entries {
		maj, minor, _ := strings.Cut(e.Name(), ".")
		m, err := strconv.Atoi(maj)
		if err != nil {
			continue
		}
		n, _ := strconv.Atoi(minor)
		vs = append(vs, ver{filepath.Join(pgDebianRoot, e.Name(), "bin"), m, n})
	}
	slices.SortFunc(vs, func(a, b ver) int {
		if a.major != b.major {
			return b.major - a.major
		}
		return b.min - a.min
	})
	dirs := make([]string, len(vs))
	for i, v := range vs {
		dirs[i] = v.dir
	}
	return dirs
}

func hasTools(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// majorVersion asks pg_ctl in dir for its major version ("15", or "9.6" for old ones).
func majorVersion(dir string) (string, error) {
	out, err := exec.Command(filepath.Join(dir, "pg_ctl"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", filepath.Join(dir, "pg_ctl"), err)
	}
	// "pg_ctl (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
	_, rest, ok := strings.Cut(string(out), ") ")
	if !ok {
		return "", fmt.Errorf("%s --version: unexpected output %q", filepath.Join(dir, "pg_ctl"), strings.TrimSpace(string(out)))
	}
	v := strings.Fields(rest)[0]
	parts := strings.Split(v, ".")
	if n, err := strconv.Atoi(parts[0]); err == nil && n < 10 && len(parts) > 1 {
		return parts[0] + "." + parts[1], nil
	}
	return parts[0], nil
}

// command builds an exec.Cmd for a PostgreSQL tool that runs as the cluster user.
func (c *cluster) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, tool), args...)
	// The cluster user may not be able to read our working directory.
	cmd.Dir = c.base
	// C locale: a fresh machine may have no locales generated, and initdb would fail on LANG.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// ensureRunning initialises the cluster if needed, starts it unless it already
// runs, and returns its port.
func (c *cluster) ensureRunning(ctx context.Context) (int, error) {
	if _, err := os.Stat(filepath.Join(c.data, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return 0, err
		}
	} else if err != nil {
		return 0, fmt.Errorf("private Postgres: %w", err)
	}
	running, err := c.running(ctx)
	if err != nil {
		return 0, err
	}
	if running {
		port, err := c.pidFilePort()
		if err != nil {
			return 0, err
		}
		c.logger.Info("private Postgres: already running, reusing it", "data", c.data, "port", port)
		return port, nil
	}
	// A free port can be taken between our probe and the server's bind; try again then.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return 0, fmt.Errorf("private Postgres: pick a free port on 127.0.0.1: %w", err)
		}
		lastErr = c.start(ctx, port)
		if lastErr == nil {
			c.logger.Info("private Postgres: started", "data", c.data, "port", port, "user", c.userLabel())
			return port, nil
		}
		if !strings.Contains(lastErr.Error(), "bind") {
			break
		}
	}
	return 0, lastErr
}

func (c *cluster) userLabel() string {
	if c.user == "" {
		return "current user"
	}
	return c.user
}

func (c *cluster) initdb(ctx context.Context) error {
	if entries, err := os.ReadDir(c.data); err == nil && len(entries) > 0 {
		return fmt.Errorf("private Postgres: %s exists, is not empty and has no PG_VERSION; remove it to start a fresh cluster", c.data)
	}
	c.logger.Info("private Postgres: creating cluster", "data", c.data, "initdb", filepath.Join(c.bin, "initdb"), "user", c.userLabel())
	cmd := c.command(ctx, "initdb", "-D", c.data, "-U", pgSuperuser, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("private Postgres: %s -D %s as %s failed: %w: %s",
			filepath.Join(c.bin, "initdb"), c.data, c.userLabel(), err, lastLines(string(out), 2))
	}
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("private Postgres: open postgresql.conf: %w", err)
	}
	if _, err := f.WriteString(clusterConf); err != nil {
		_ = f.Close()
		return fmt.Errorf("private Postgres: write postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("private Postgres: write postgresql.conf: %w", err)
	}
	return nil
}

// running asks pg_ctl whether a live postmaster owns the data dir (it checks
// postmaster.pid and that the process exists).
func (c *cluster) running(ctx context.Context) (bool, error) {
	out, err := c.command(ctx, "pg_ctl", "status", "-D", c.data).CombinedOutput()
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 { // 3: not running
		return false, nil
	}
	return false, fmt.Errorf("private Postgres: %s status -D %s as %s: %w: %s",
		filepath.Join(c.bin, "pg_ctl"), c.data, c.userLabel(), err, lastLines(string(out), 1))
}

// pidFilePort reads the port a running postmaster listens on from line 4 of postmaster.pid.
func (c *cluster) pidFilePort() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("private Postgres: read port of running server: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, fmt.Errorf("private Postgres: %s has no port line yet", filepath.Join(c.data, "postmaster.pid"))
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil {
		return 0, fmt.Errorf("private Postgres: port in %s: %w", filepath.Join(c.data, "postmaster.pid"), err)
	}
	return port, nil
}

func (c *cluster) start(ctx context.Context, port int) error {
	wait := strconv.Itoa(int(pgWait.Seconds()))
	cmd := c.command(ctx, "pg_ctl", "start", "-D", c.data, "-l", c.logFile, "-w", "-t", wait, "-s",
		"-o", "-p "+strconv.Itoa(port))
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	detail := serverLogError(c.logFile)
	if detail == "" {
		detail = lastLines(string(out), 1)
	}
	return fmt.Errorf("private Postgres: %s start -D %s on 127.0.0.1:%d as %s failed: %w: %s (log: %s)",
		filepath.Join(c.bin, "pg_ctl"), c.data, port, c.userLabel(), err, detail, c.logFile)
}

func (c *cluster) stop(ctx context.Context) error {
	running, err := c.running(ctx)
	if err != nil || !running {
		return err
	}
	wait := strconv.Itoa(int(pgWait.Seconds()))
	out, err := c.command(ctx, "pg_ctl", "stop", "-D", c.data, "-m", "fast", "-w", "-t", wait, "-s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("private Postgres: %s stop -D %s: %w: %s", filepath.Join(c.bin, "pg_ctl"), c.data, err, lastLines(string(out), 1))
	}
	c.logger.Info("private Postgres: stopped", "data", c.data)
	return nil
}

// serverLogError returns the last FATAL/PANIC/ERROR line of the server log, the
// line that says why a start failed.
func serverLogError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0 && i >= len(lines)-50; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.Contains(l, "FATAL:") || strings.Contains(l, "PANIC:") || strings.Contains(l, "ERROR:") {
			return l
		}
	}
	return ""
}

// lastLines joins the last n non-empty lines of s with " | " so an error stays on one line.
func lastLines(s string, n int) string {
	var keep []string
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append([]string{l}, keep...)
		}
	}
	if len(keep) == 0 {
		return "no output"
	}
	return strings.Join(keep, " | ")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureDatabase creates database name on the server at adminURL unless it exists.
func ensureDatabase(ctx context.Context, adminURL, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created concurrently
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
