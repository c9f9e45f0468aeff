package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

var sixDigits = regexp.MustCompile(`\b\d{6}\b`)

// TestTheStackLogsAndExportsNoSecret runs the real api, notifier and reaper
// binaries at debug level with real SMTP (with a password) and a
// Twilio-speaking server, walks every path a secret takes (API key, link
// tokens, passwords right and wrong, codes right and wrong, access tokens,
// grants, the webhook signing secret, the master secret, the SMTP password
// and Twilio token, full recipient addresses), and then looks for each in
// everything the binaries wrote and in their /metrics (reliability.md §7.4).
func TestTheStackLogsAndExportsNoSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the three binaries")
	}
	ctx := context.Background()
	bin := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "../api", "../notifier", "../reaper")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	dbURL := testkit.Database(t)
	natsURL, _ := testkit.NATS(t)
	smtpPass := "smtp-" + randomText(t)
	smtpSrv := testkit.StartSMTP(t, testkit.WithSMTPAuth("mailer", smtpPass))
	smtpURL := fmt.Sprintf("smtp://mailer:%s@%s?tls=none", url.QueryEscape(smtpPass), smtpSrv.Addr())
	tw := testkit.StartTwilio(t)
	var hookMu sync.Mutex
	var hookBodies []string
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hookBodies = append(hookBodies, string(b))
		hookMu.Unlock()
	}))
	t.Cleanup(hookSrv.Close)

	master := base64.StdEncoding.EncodeToString([]byte(randomText(t) + randomText(t)))
	apiAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	base := "http://" + apiAddr
	metricsAddr := map[string]string{
		"notifier": fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		"reaper":   fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
	}
	env := withEnv(os.Environ(), map[string]string{
		"DATABASE_URL": dbURL, "NATS_URL": natsURL, "SHARELINKS_SECRET": master,
		"PUBLIC_BASE_URL": base, "HTTP_ADDR": apiAddr, "LOG_LEVEL": "debug", "LOG_FORMAT": "json",
		"SMTP_URL": smtpURL, "TWILIO_ACCOUNT_SID": tw.SID(), "TWILIO_AUTH_TOKEN": tw.Token(),
		"TWILIO_FROM": "+15005550006", "TWILIO_API_URL": tw.URL(), "WEBHOOK_ALLOW_PRIVATE": "true",
		"REAP_INTERVAL": "1s", "NOTIFY_RETRY_BASE": "100ms",
	})
	tool := func(args ...string) string {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "api"), args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("api %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	tool("migrate")
	key := lastLine(tool("keys", "create", "--owner", "acme"))

	logs := &testkit.Buffer{} // the three binaries' output
	out := &output{w: logs}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var procs []*proc
	t.Cleanup(func() { stopAll(logger, procs) })
	exited := make(chan *proc, 3)
	for _, name := range []string{"api", "notifier", "reaper"} {
		var args []string
		penv := env
		if name == "api" {
			args = []string{"serve"}
		} else {
			penv = withEnv(env, map[string]string{"METRICS_ADDR": metricsAddr[name]})
		}
		p, err := startProc(name, filepath.Join(bin, name), args, penv, out)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		go func() { <-p.done; exited <- p }()
	}
	if err := waitReady(ctx, base+"/readyz", 30*time.Second, exited); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}

	c := &client{t: t, base: base, key: key}
	secrets := map[string]string{"API key": key, "master secret": master, "SMTP password": smtpPass, "Twilio token": tw.Token()}
	var hook struct{ Secret string }
	c.do("POST", "/v1/webhooks", "", map[string]any{"url": hookSrv.URL + "/hook", "events": []string{"link.verified", "link.opened"}}, 201, &hook)
	secrets["webhook secret"] = hook.Secret

	const email, phone = "jane.doe@example.com", "+14155550123"
	password := "correct horse " + randomText(t)
	secrets["password"], secrets["recipient email"], secrets["recipient phone"] = password, email, phone
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	target := []any{map[string]any{"id": "report.pdf", "type": "file", "url": "https://storage.example.com/report.pdf"}}
	// Providers' error messages name the recipient: the first send on each
	// channel fails with one, so the retry paths' logging is walked too.
	smtpSrv.FailNext(1, 451, "4.2.1 Mailbox <"+email+"> busy, try later")
	tw.FailNext(1, 503, 20503, "Service unavailable for To "+phone)
	var created struct{ Links []struct{ URL string } }
	c.do("POST", "/v1/links", "", map[string]any{"links": []any{
		map[string]any{"targets": target, "link_type": "view", "expires_at": future,
			"authenticators": []any{map[string]any{"auth_type": "password", "auth_context": password}}},
		map[string]any{"targets": target, "link_type": "view", "expires_at": future, "notify": true,
			"authenticators": []any{map[string]any{"auth_type": "email_otp", "auth_context": email}}},
		map[string]any{"targets": target, "link_type": "view", "expires_at": future, "notify": true,
			"authenticators": []any{map[string]any{"auth_type": "sms_otp", "auth_context": phone}}},
	}}, 201, &created)
	if len(created.Links) != 3 {
		t.Fatalf("created %d links", len(created.Links))
	}
	paths := make([]string, 3)
	for i, l := range created.Links {
		u, err := url.Parse(l.URL)
		if err != nil {
			t.Fatal(err)
		}
		paths[i] = u.Path
		secrets[fmt.Sprintf("link token %d", i)] = strings.TrimPrefix(u.Path, "/s/")
	}
	smtpSrv.WaitMessages(t, 1, 20*time.Second)
	tw.WaitMessages(t, 1, 20*time.Second)
	c.do("GET", "/v1/links?recipient="+url.QueryEscape(email), "", nil, 200, nil)

	// The password link: a wrong password, then the right one, then open.
	wrong := "wrong horse " + randomText(t)
	secrets["wrong password"] = wrong
	c.do("POST", paths[0]+"/verify", "-", map[string]string{"password": wrong}, 401, nil)
	c.openWith(paths[0], map[string]string{"password": password}, secrets, "password")

	// The code links: request a code, a wrong code, then the right one.
	codeOf := func(text string) string {
		m := sixDigits.FindAllString(text, -1)
		if len(m) == 0 {
			t.Fatalf("no code in %q", text)
		}
		return m[len(m)-1]
	}
	for i, channel := range []string{"email", "sms"} {
		path := paths[i+1]
		c.do("POST", path+"/otp", "-", map[string]any{}, 202, nil)
		var code string
		if channel == "email" {
			ms := smtpSrv.WaitMessages(t, 2, 20*time.Second)
			code = codeOf(ms[len(ms)-1].Text)
		} else {
			ms := tw.WaitMessages(t, 2, 20*time.Second)
			code = codeOf(ms[len(ms)-1].Body)
		}
		secrets[channel+" code"] = code
		bad := "000000"
		if bad == code {
			bad = "111111"
		}
		secrets[channel+" wrong code"] = bad
		c.do("POST", path+"/verify", "-", map[string]string{"code": bad}, 401, nil)
		c.openWith(path, map[string]string{"code": code}, secrets, channel)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		hookMu.Lock()
		defer hookMu.Unlock()
		return len(hookBodies) >= 6 // three verified, three opened
	}, "webhook deliveries")

	exported := map[string]string{}
	for name, addr := range map[string]string{"api": apiAddr, "notifier": metricsAddr["notifier"], "reaper": metricsAddr["reaper"]} {
		exported[name] = testkit.Metrics(t, "http://"+addr)
	}
	stopAll(logger, procs) // every line flushed
	procs = nil
	written := logs.String()
	if !strings.Contains(written, `"level":"DEBUG"`) || !strings.Contains(written, `"level":"WARN"`) {
		t.Fatalf("no debug or no warning lines: the binaries did not log what this test must read\n%s", written)
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s was not captured", what)
		}
		find := func(text string) bool { return strings.Contains(text, s) }
		if strings.HasSuffix(what, "code") { // six digits: match them as a number, not inside one
			find = func(text string) bool {
				return regexp.MustCompile(`(^|[^0-9])` + s + `([^0-9]|$)`).MatchString(text)
			}
		}
		if find(written) {
			t.Errorf("the %s is in the binaries' output:\n%s", what, lineWith(written, s))
		}
		for name, m := range exported {
			if find(m) {
				t.Errorf("the %s is in the %s's /metrics:\n%s", what, name, lineWith(m, s))
			}
		}
	}
	t.Logf("%d secrets looked for in %d lines of output and %d bytes of metrics", len(secrets),
		strings.Count(written, "\n"), len(exported["api"])+len(exported["notifier"])+len(exported["reaper"]))
}

// client is the test's HTTP caller.
type client struct {
	t         *testing.T
	base, key string
}

// do sends body as JSON; bearer "" sends the API key, "-" none, anything
// else that token. It fails unless the status is want, and decodes into v.
func (c *client) do(method, path, bearer string, body any, want int, v any) *http.Response {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch bearer {
	case "":
		req.Header.Set("Authorization", "Bearer "+c.key)
	case "-":
	default:
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	noRedirect := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			c.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp
}

// openWith verifies with body, opens the target and records the access
// token and the grant among the secrets.
func (c *client) openWith(path string, body map[string]string, secrets map[string]string, name string) {
	c.t.Helper()
	var acc struct {
		AccessToken string `json:"access_token"`
	}
	c.do("POST", path+"/verify", "-", body, 200, &acc)
	secrets[name+" access token"] = acc.AccessToken
	resp := c.do("GET", path+"/open", acc.AccessToken, nil, 302, nil)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		c.t.Fatal(err)
	}
	secrets[name+" grant"] = loc.Query().Get("grant")
}

func randomText(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// lineWith returns the line of text holding s, for the failure message.
func lineWith(text, s string) string {
	for line := range strings.Lines(text) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}
