package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/sharelinks/sharelinks/internal/secret"
)

// localPostgres is the machine's own server, used when it answers and no
// URL is given (the same rule `make test` follows).
const localPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// stack is everything the benchmark starts: a fresh database, NATS, the
// sinks, and the three service binaries as child processes.
type stack struct {
	log     *slog.Logger
	tmp     string
	binDir  string
	adminDB string // server URL the bench database is created on
	dbName  string
	dbURL   string
	natsURL string
	ns      *server.Server
	secret  string
	keys    *secret.Keys
	apiKey  string
	ownerID string
	apiURL  string
	smtp    *smtpSink
	twilio  *twilioSink
	pool    *pgxpool.Pool // loadgen's own small pool: seeding, polling
	procs   map[string]*child
	order   []string // start order, stopped in reverse
	// metricsAddr is where each service serves /metrics.
	metricsAddr map[string]string
	// pendingSQL counts outbox rows not yet published. Older schemas mark
	// published rows (published_at); newer ones delete them.
	pendingSQL string
}

// child is one service process.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startStack builds the binaries and starts everything. On error the
// caller still calls close to release what was started.
func startStack(ctx context.Context, log *slog.Logger) (*stack, error) {
	s := &stack{log: log, procs: map[string]*child{}, metricsAddr: map[string]string{}}
	var err error
	if s.tmp, err = os.MkdirTemp("", "sharelinks-bench-"); err != nil {
		return s, fmt.Errorf("temp dir: %w", err)
	}
	s.binDir = filepath.Join(s.tmp, "bin")
	if err := os.MkdirAll(s.binDir, 0o755); err != nil {
		return s, err
	}

	// Build while the database and NATS come up: go build is the slowest step.
	buildErr := make(chan error, 1)
	go func() { buildErr <- s.build(ctx) }()

	if err := s.createDatabase(ctx); err != nil {
		<-buildErr
		return s, err
	}
	if err := s.startNATS(); err != nil {
		<-buildErr
		return s, err
	}
	if s.smtp, err = startSMTPSink(); err != nil {
		<-buildErr
		return s, fmt.Errorf("SMTP sink: %w", err)
	}
	if s.twilio, err = startTwilioSink(); err != nil {
		<-buildErr
		return s, fmt.Errorf("Twilio sink: %w", err)
	}
	s.secret = secret.Generate()
	if s.keys, err = secret.Parse(s.secret); err != nil {
		<-buildErr
		return s, err
	}
	if err := <-buildErr; err != nil {
		return s, err
	}

	if out, err := s.runTool(ctx, "api", "migrate"); err != nil {
		return s, fmt.Errorf("api migrate: %w\n%s", err, out)
	}
	out, err := s.runTool(ctx, "api", "keys", "create", "--owner", "bench")
	if err != nil {
		return s, fmt.Errorf("api keys create: %w\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	s.apiKey = strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(s.apiKey, "slk_") {
		return s, errors.New("api keys create: last stdout line is not a key")
	}

	pcfg, err := pgxpool.ParseConfig(s.dbURL)
	if err != nil {
		return s, err
	}
	pcfg.MaxConns = 4
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return s, fmt.Errorf("connect to bench database: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT id::text FROM owners WHERE name = 'bench'`).Scan(&s.ownerID); err != nil {
		return s, fmt.Errorf("bench owner: %w", err)
	}
	var marks bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_name = 'outbox' AND column_name = 'published_at')`).Scan(&marks); err != nil {
		return s, fmt.Errorf("inspect outbox: %w", err)
	}
	s.pendingSQL = `SELECT count(*) FROM outbox`
	if marks {
		s.pendingSQL = `SELECT count(*) FROM outbox WHERE published_at IS NULL`
	}
	// The ceilings write their events here: same shape and indexes as the
	// outbox, but no relay reads it, so nothing downstream sees them.
	if _, err := s.pool.Exec(ctx, `CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL)`); err != nil {
		return s, fmt.Errorf("create bench_outbox: %w", err)
	}

	apiAddr, err := freeAddr()
	if err != nil {
		return s, err
	}
	s.apiURL = "http://" + apiAddr
	common := []string{
		"DATABASE_URL=" + s.dbURL,
		"NATS_URL=" + s.natsURL,
		"SHARELINKS_SECRET=" + s.secret,
		"PUBLIC_BASE_URL=" + s.apiURL,
		"LOG_FORMAT=json",
	}
	// BENCH_API_ENV (e.g. GOMEMLIMIT=64MiB) adds space-separated
	// KEY=VALUE settings to the api alone, for experiments.
	apiEnv := slices.Concat(common, []string{"HTTP_ADDR=" + apiAddr}, strings.Fields(os.Getenv("BENCH_API_ENV")))
	if err := s.startChild(ctx, "api", apiAddr, apiEnv); err != nil {
		return s, err
	}
	nAddr, err := freeAddr()
	if err != nil {
		return s, err
	}
	if err := s.startChild(ctx, "notifier", nAddr, slices.Concat(common, []string{
		"METRICS_ADDR=" + nAddr,
		"SMTP_URL=smtp://" + s.smtp.addr + "?tls=none",
		"MAIL_FROM=sharelinks bench <bench@localhost>",
		"TWILIO_API_URL=http://" + s.twilio.addr,
		"TWILIO_ACCOUNT_SID=" + s.twilio.sid,
		"TWILIO_AUTH_TOKEN=" + s.twilio.token,
		"TWILIO_FROM=+14155550100",
		"NOTIFY_CONCURRENCY=8",
		"OTP_CONCURRENCY=8",
		"NOTIFY_RETRY_BASE=1s",
	})); err != nil {
		return s, err
	}
	rAddr, err := freeAddr()
	if err != nil {
		return s, err
	}
	if err := s.startChild(ctx, "reaper", rAddr, slices.Concat(common, []string{
		"METRICS_ADDR=" + rAddr,
		"REAP_INTERVAL=1s",
	})); err != nil {
		return s, err
	}
	return s, nil
}

// build compiles the three binaries from the module in the working directory.
func (s *stack) build(ctx context.Context) error {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", s.binDir+string(filepath.Separator),
		"./cmd/api", "./cmd/notifier", "./cmd/reaper")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build (run from the repository root): %w\n%s", err, out)
	}
	s.log.Info("built api, notifier, reaper", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// adminURL picks the Postgres server: BENCH_DATABASE_URL, TEST_DATABASE_URL,
// the local server on 5432 when it answers, else the devstack's private
// test cluster.
func adminURL(ctx context.Context) (string, string, error) {
	for _, env := range []string{"BENCH_DATABASE_URL", "TEST_DATABASE_URL"} {
		if u := os.Getenv(env); u != "" {
			return u, env, nil
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(pctx, localPostgres); err == nil {
		_ = conn.Close(pctx)
		return localPostgres, "local Postgres on 5432", nil
	}
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/devstack", "testdb")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("no BENCH_DATABASE_URL/TEST_DATABASE_URL, no local Postgres, and devstack testdb failed: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), "devstack testdb", nil
}

func (s *stack) createDatabase(ctx context.Context) error {
	admin, from, err := adminURL(ctx)
	if err != nil {
		return err
	}
	s.adminDB = admin
	s.dbName = "sharelinks_bench_" + randHex(6)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(admin), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+s.dbName); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + s.dbName
	u.RawPath = ""
	s.dbURL = u.String()
	s.log.Info("database created", "server", redact(admin), "from", from, "database", s.dbName)
	return nil
}

// startNATS runs an embedded JetStream server unless NATS_URL is set.
func (s *stack) startNATS() error {
	if u := os.Getenv("NATS_URL"); u != "" {
		s.natsURL = u
		s.log.Info("using NATS_URL", "url", u)
		return nil
	}
	dir := filepath.Join(s.tmp, "nats")
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("embedded NATS not ready within 10s")
	}
	s.ns = ns
	s.natsURL = ns.ClientURL()
	s.log.Info("embedded NATS JetStream started", "url", s.natsURL, "version", server.VERSION)
	return nil
}

// runTool runs a binary to completion (migrate, keys) and returns stdout.
func (s *stack) runTool(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+s.dbURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// startChild starts a service binary with env and waits for its /readyz.
func (s *stack) startChild(ctx context.Context, name, addr string, env []string) error {
	c := &child{name: name, logPath: filepath.Join(s.tmp, name+".log"), done: make(chan struct{})}
	f, err := os.Create(c.logPath)
	if err != nil {
		return err
	}
	c.cmd = exec.Command(filepath.Join(s.binDir, name))
	// Later entries win over the inherited environment.
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = f, f
	// If loadgen dies without cleaning up, the kernel stops the services.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		f.Close()
		close(c.done)
	}()
	s.procs[name] = c
	s.order = append(s.order, name)
	s.metricsAddr[name] = addr

	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-c.done:
			return fmt.Errorf("%s exited at start (%v):\n%s", name, c.err, tail(c.logPath, 20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.log.Info("started", "service", name, "pid", c.cmd.Process.Pid, "addr", addr)
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within 30s:\n%s", name, tail(c.logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive fails if a service process has exited.
func (s *stack) alive() error {
	for _, name := range s.order {
		c := s.procs[name]
		select {
		case <-c.done:
			return fmt.Errorf("%s exited (%v):\n%s", name, c.err, tail(c.logPath, 20))
		default:
		}
	}
	return nil
}

// close stops the children (SIGTERM, then SIGKILL), NATS and the sinks,
// drops the database and removes the temp dir.
func (s *stack) close() {
	for i := len(s.order) - 1; i >= 0; i-- {
		c := s.procs[s.order[i]]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	if s.smtp != nil {
		s.smtp.close()
	}
	if s.twilio != nil {
		s.twilio.close()
	}
	if s.dbName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if conn, err := pgx.Connect(ctx, s.adminDB); err == nil {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+s.dbName+" WITH (FORCE)"); err != nil {
				s.log.Warn("drop bench database", "database", s.dbName, "err", err)
			} else {
				s.log.Info("database dropped", "database", s.dbName)
			}
			_ = conn.Close(ctx)
		}
		cancel()
	}
	if s.tmp != "" && os.Getenv("BENCH_KEEP_TMP") == "" {
		_ = os.RemoveAll(s.tmp)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(connection string)"
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
