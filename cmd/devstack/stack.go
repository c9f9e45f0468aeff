package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sharelinks/sharelinks/internal/devstack"
)

const (
	notifierMetricsAddr = "127.0.0.1:9091"
	reaperMetricsAddr   = "127.0.0.1:9092"
	// stopGrace is how long children get to exit after SIGTERM before SIGKILL.
	stopGrace = 15 * time.Second
)

// binaries are the programs the stack runs, built into <data>/bin.
var binaries = []string{"api", "notifier", "reaper"}

// stack is what runStack has set up so far.
type stack struct {
	logger   *slog.Logger
	data     string
	out      *output
	env      []string // environment shared by every child
	apiURL   string   // where a developer reaches the api
	readyURL string   // what we poll
	dbURL    string
	natsURL  string
	mailDir  string
	smsDir   string
}

// runStack runs the dev stack until ctx ends (Ctrl-C) or a child dies.
func runStack(ctx context.Context, logger *slog.Logger, data string, readyTimeout time.Duration) (err error) {
	s := &stack{logger: logger, data: data, out: &output{w: os.Stdout}}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	httpAddr := envOr("HTTP_ADDR", ":8080")
	s.apiURL, s.readyURL, err = localURLs(httpAddr)
	if err != nil {
		return err
	}
	for _, a := range []struct{ name, addr string }{
		{"HTTP_ADDR (api)", httpAddr},
		{"notifier metrics", notifierMetricsAddr},
		{"reaper metrics", reaperMetricsAddr},
	} {
		if err := checkFree(a.addr); err != nil {
			return fmt.Errorf("%s %s is already in use (another devstack still running?): %w", a.name, a.addr, err)
		}
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", data, err)
	}
	binDir := filepath.Join(data, "bin")
	if err := ensureBinaries(ctx, logger, binDir); err != nil {
		return err
	}
	secret, err := loadOrCreateSecret(filepath.Join(data, "secret"))
	if err != nil {
		return err
	}

	if s.dbURL = os.Getenv("DATABASE_URL"); s.dbURL != "" {
		logger.Info("using DATABASE_URL", "url", redactURL(s.dbURL))
	} else {
		dbURL, stopPG, err := devstack.StartPostgres(ctx, filepath.Join(data, "pg"), logger)
		if err != nil {
			return err
		}
		s.dbURL = dbURL
		cleanups = append(cleanups, func() {
			if err := stopPG(); err != nil {
				logger.Error("stop Postgres", "err", err)
			}
		})
	}
	if s.natsURL = os.Getenv("NATS_URL"); s.natsURL != "" {
		logger.Info("using NATS_URL", "url", redactURL(s.natsURL))
	} else {
		natsURL, stopNATS, err := devstack.StartNATS(filepath.Join(data, "nats"))
		if err != nil {
			return err
		}
		s.natsURL = natsURL
		logger.Info("embedded NATS started", "url", natsURL, "store", filepath.Join(data, "nats"))
		cleanups = append(cleanups, func() {
			stopNATS()
			logger.Info("embedded NATS stopped")
		})
	}

	s.mailDir = filepath.Join(data, "mail")
	s.smsDir = filepath.Join(data, "sms")
	for _, d := range []string{s.mailDir, s.smsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create sink dir: %w", err)
		}
	}
	s.env = withEnv(os.Environ(), map[string]string{
		"DATABASE_URL":      s.dbURL,
		"NATS_URL":          s.natsURL,
		"SHARELINKS_SECRET": secret,
		"PUBLIC_BASE_URL":   envOr("PUBLIC_BASE_URL", s.apiURL),
		"HTTP_ADDR":         httpAddr,
		"MAIL_SINK_DIR":     s.mailDir,
		"SMS_SINK_DIR":      s.smsDir,
	})
	apiBin := filepath.Join(binDir, "api")

	if _, err := s.runTool(ctx, apiBin, true, "migrate"); err != nil {
		return err
	}
	key, err := s.devKey(ctx, apiBin, filepath.Join(data, "dev-key"))
	if err != nil {
		return err
	}

	procs := make([]*proc, 0, len(binaries))
	defer func() { stopAll(logger, procs) }()
	exited := make(chan *proc, len(binaries))
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"api", []string{"serve"}, nil},
		{"notifier", nil, map[string]string{"METRICS_ADDR": notifierMetricsAddr}},
		{"reaper", nil, map[string]string{"METRICS_ADDR": reaperMetricsAddr}},
	} {
		p, err := startProc(c.name, filepath.Join(binDir, c.name), c.args, withEnv(s.env, c.env), s.out)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		go func() { <-p.done; exited <- p }()
	}

	if err := waitReady(ctx, s.readyURL, readyTimeout, exited); err != nil {
		return err
	}
	s.out.block(s.banner(key, time.Now()))

	select {
	case <-ctx.Done():
		logger.Info("stopping (signal received)")
		return nil
	case p := <-exited:
		return unexpectedExit(p)
	}
}

// unexpectedExit is the one-line error for a child that died on its own.
func unexpectedExit(p *proc) error {
	return fmt.Errorf("%s exited unexpectedly (%v); its output is above, prefixed [%s]; stopped everything", p.name, p.exitErr(), p.name)
}

// ensureBinaries builds api, notifier and reaper into binDir unless they are
// all there already (`make run` has just built them).
func ensureBinaries(ctx context.Context, logger *slog.Logger, binDir string) error {
	missing := false
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	if _, err := os.Stat("go.mod"); err != nil {
		return fmt.Errorf("binaries missing in %s and no go.mod in the current directory to build them from: run `make build` from the repository root", binDir)
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", binDir, err)
	}
	logger.Info("building binaries", "into", binDir)
	args := []string{"build", "-o", binDir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// loadOrCreateSecret returns SHARELINKS_SECRET from the environment, else the
// one stored at path, generating and storing it (0600) the first time, so grants
// and sessions stay valid across restarts.
func loadOrCreateSecret(path string) (string, error) {
	if s := os.Getenv("SHARELINKS_SECRET"); s != "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if raw, err := base64.StdEncoding.DecodeString(s); err != nil || len(raw) < 32 {
			return "", fmt.Errorf("%s is not base64 of at least 32 bytes; delete it to have a new secret generated", path)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	s := base64.StdEncoding.EncodeToString(raw)
	if err := writePrivate(path, s+"\n"); err != nil {
		return "", err
	}
	return s, nil
}

// writePrivate writes content to path readable by the owner only.
func writePrivate(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := f.WriteString(content); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// devKey returns the dev API key stored at path, creating one with
// `api keys create --owner dev` the first time, or again if the database no
// longer knows the stored one (a wiped cluster, another DATABASE_URL).
func (s *stack) devKey(ctx context.Context, apiBin, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read dev key: %w", err)
	}
	if key := strings.TrimSpace(string(b)); key != "" {
		list, err := s.runTool(ctx, apiBin, false, "keys", "list")
		switch {
		case err != nil:
			s.logger.Warn("could not list keys; reusing the stored dev key unchecked", "err", err)
			return key, nil
		case keyListed(list, key):
			return key, nil
		}
		s.logger.Info("stored dev key is unknown to this database; creating a new one", "file", path)
	}
	out, err := s.runTool(ctx, apiBin, false, "keys", "create", "--owner", "dev")
	if err != nil {
		return "", err
	}
	key := lastLine(out)
	if !strings.HasPrefix(key, "slk_") {
		return "", errors.New("api keys create --owner dev: last line of its output is not a key starting with slk_")
	}
	if err := writePrivate(path, key+"\n"); err != nil {
		return "", err
	}
	s.logger.Info("created dev API key", "file", path)
	return key, nil
}

// keyListed reports whether `api keys list` output shows key as usable. The
// list shows keys by prefix (slk_ and a few characters), never whole. When it
// has a REVOKED column, a row with anything but "-" there is a revoked key.
func keyListed(list, key string) bool {
	if len(key) < 12 {
		return strings.Contains(list, key)
	}
	lines := strings.Split(list, "\n")
	header := strings.Fields(lines[0])
	hasRevoked := len(header) > 0 && strings.EqualFold(header[len(header)-1], "REVOKED")
	for _, l := range lines {
		if !strings.Contains(l, key[:8]) && !strings.Contains(l, key[4:12]) {
			continue
		}
		f := strings.Fields(l)
		if hasRevoked && len(f) == len(header) && f[len(f)-1] != "-" {
			continue
		}
		return true
	}
	return false
}

// lastLine returns the last non-empty line of s, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// runTool runs a one-shot command of a binary (migrate, keys ...) with the
// stack's environment. Its stderr, and its stdout if show is set, go to the
// screen prefixed with its name; its stdout is also returned.
func (s *stack) runTool(ctx context.Context, bin string, show bool, args ...string) (string, error) {
	name := filepath.Base(bin)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = s.env
	cmd.WaitDelay = 3 * time.Second
	var stdout bytes.Buffer
	stderr := s.out.prefixed(name)
	cmd.Stderr = stderr
	cmd.Stdout = &stdout
	var shown *lineWriter
	if show {
		shown = s.out.prefixed(name)
		cmd.Stdout = multiWriter{&stdout, shown}
	}
	err := cmd.Run()
	stderr.Flush()
	if shown != nil {
		shown.Flush()
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%s %s failed (%v); its output is above, prefixed [%s]", name, strings.Join(args, " "), err, name)
	}
	return stdout.String(), nil
}

type multiWriter struct {
	a *bytes.Buffer
	b *lineWriter
}

func (m multiWriter) Write(p []byte) (int, error) {
	m.a.Write(p)
	return m.b.Write(p)
}

// proc is a long-running child process in its own process group, so Ctrl-C in
// the terminal reaches only devstack, which then stops the children in order.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, valid once done is closed
}

func (p *proc) exitErr() error {
	if p.err == nil {
		return errors.New("exit status 0")
	}
	return p.err
}

func startProc(name, path string, args, env []string, out *output) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	stdout, stderr := out.prefixed(name), out.prefixed(name)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 3 * time.Second
	// Pdeathsig: if devstack itself is killed, the children do not linger.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		stdout.Flush()
		stderr.Flush()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) signal(sig syscall.Signal) {
	// Negative pid: the whole process group, in case the child forked.
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopAll sends SIGTERM to every running child, waits up to stopGrace, then
// kills what is left.
func stopAll(logger *slog.Logger, procs []*proc) {
	for _, p := range procs {
		if !p.exited() {
			p.signal(syscall.SIGTERM)
		}
	}
	graceOver := time.After(stopGrace)
	for _, p := range procs {
		select {
		case <-p.done:
			continue
		case <-graceOver:
		}
		for _, q := range procs {
			if !q.exited() {
				logger.Warn("child did not stop in time; killing it", "child", q.name, "grace", stopGrace)
				q.signal(syscall.SIGKILL)
			}
		}
		for _, q := range procs {
			<-q.done
		}
		return
	}
}

// waitReady polls readyURL until it answers 200, a child exits, ctx ends or
// timeout passes.
func waitReady(ctx context.Context, readyURL string, timeout time.Duration, exited <-chan *proc) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastStatus := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
		if err != nil {
			return fmt.Errorf("readiness probe %s: %w", readyURL, err)
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			lastStatus = resp.Status
		} else {
			lastStatus = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p := <-exited:
			return unexpectedExit(p)
		case <-deadline.C:
			return fmt.Errorf("api not ready: %s did not answer 200 within %s (last: %s)", readyURL, timeout, lastStatus)
		case <-tick.C:
		}
	}
}

// banner tells the developer what is running and how to try it.
func (s *stack) banner(key string, now time.Time) string {
	expires := now.UTC().Add(7 * 24 * time.Hour).Truncate(time.Second).Format(time.RFC3339)
	body := fmt.Sprintf(`{"links":[{"targets":[{"id":"report.pdf","type":"file","url":"https://example.com/files/report.pdf"}],"link_type":"view","expires_at":%q,"authenticators":[{"auth_type":"password","auth_context":"correct horse battery"}]}]}`, expires)
	mail := s.mailDir + " (one .eml file per message)"
	if u := os.Getenv("SMTP_URL"); u != "" {
		mail = "SMTP_URL " + redactURL(u)
	}
	sms := s.smsDir + " (also logged, masked, by [notifier])"
	if os.Getenv("TWILIO_ACCOUNT_SID") != "" {
		sms = "Twilio (TWILIO_ACCOUNT_SID is set)"
	}
	var b strings.Builder
	line := strings.Repeat("=", 72)
	fmt.Fprintf(&b, "\n%s\nsharelinks dev stack is up\n\n", line)
	fmt.Fprintf(&b, "  API          %s\n", s.apiURL)
	fmt.Fprintf(&b, "  Dev API key  %s   (kept in %s)\n", key, filepath.Join(s.data, "dev-key"))
	fmt.Fprintf(&b, "  Mail         %s\n", mail)
	fmt.Fprintf(&b, "  SMS          %s\n", sms)
	fmt.Fprintf(&b, "  Metrics      %s/metrics  http://%s/metrics  http://%s/metrics\n", s.apiURL, notifierMetricsAddr, reaperMetricsAddr)
	fmt.Fprintf(&b, "  Postgres     %s\n", redactURL(s.dbURL))
	fmt.Fprintf(&b, "  NATS         %s\n", redactURL(s.natsURL))
	fmt.Fprintf(&b, "\nCreate a password-protected link (valid 7 days):\n\n")
	fmt.Fprintf(&b, "curl -sS -X POST %s/v1/links -H \"Authorization: Bearer %s\" -H 'Content-Type: application/json' -d '%s'\n", s.apiURL, key, body)
	codeBody := fmt.Sprintf(`{"links":[{"targets":[{"id":"q3","type":"folder","name":"Q3 numbers"}],"link_type":"download","expires_at":%q,"title":"Q3 numbers","notify":true,"authenticators":[{"auth_type":"email_otp","auth_context":"you@example.com"}]}]}`, expires)
	fmt.Fprintf(&b, "\nOr an email-code link whose Open email (and, on request, the code) lands in the mail folder above;\nopen its \"url\" in a browser:\n\n")
	fmt.Fprintf(&b, "curl -sS -X POST %s/v1/links -H \"Authorization: Bearer %s\" -H 'Content-Type: application/json' -d '%s'\n", s.apiURL, key, codeBody)
	fmt.Fprintf(&b, "\nCtrl-C stops everything.\n%s\n\n", line)
	return b.String()
}

// localURLs derives, from the api's listen address, the URL a developer uses
// and the URL devstack polls for readiness.
func localURLs(httpAddr string) (apiURL, readyURL string, err error) {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return "", "", fmt.Errorf("HTTP_ADDR %q is not host:port: %w", httpAddr, err)
	}
	if port == "" || port == "0" {
		return "", "", fmt.Errorf("HTTP_ADDR %q must name a fixed port for the dev stack", httpAddr)
	}
	shown, probe := host, host
	switch host {
	case "", "0.0.0.0", "::":
		shown, probe = "localhost", "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(shown, port), "http://" + net.JoinHostPort(probe, port) + "/readyz", nil
}

// checkFree fails if nothing can listen on addr right now.
func checkFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// envOr returns the environment variable key, or def when it is empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// withEnv returns env with the given variables set, replacing earlier values.
func withEnv(env []string, set map[string]string) []string {
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	return out
}
