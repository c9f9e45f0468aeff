package web_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/delivery"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/mail"
	"github.com/sharelinks/sharelinks/internal/obs"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/sms"
	"github.com/sharelinks/sharelinks/internal/testkit"
	"github.com/sharelinks/sharelinks/internal/web"
	"github.com/sharelinks/sharelinks/internal/webhook"
)

// env is the API with the web pages mounted, on its own httptest server,
// next to a testkit stack (Postgres, NATS, outbox relay) whose service it
// uses, and a fake storage host that link targets point to.
type env struct {
	st      *testkit.Stack
	URL     string // the server recipients use: JSON API and pages
	key     string // an owner's API key
	storage *storage
	smtp    *testkit.SMTPServer // set when the notifier runs (withMail)
	logs    *testkit.Buffer     // everything the server logged
	obs     *countingObserver
}

type envOpts struct {
	mail       bool // run the OTP dispatcher, sending to a test SMTP server
	brand      compose.Brand
	publicBase string // PUBLIC_BASE_URL given to the pages (default: the server's URL)
	stack      []testkit.StackOption
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	st := testkit.NewStack(t, "", "", o.stack...)
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	t.Cleanup(srv.Close)
	base := o.publicBase
	if base == "" {
		base = srv.URL
	}
	counter := &countingObserver{counts: map[string]int{}}
	pages := web.New(st.Service, web.Config{PublicBaseURL: base, Brand: o.brand, Log: log, Observer: counter})
	hooks := webhook.NewService(st.Store, st.Keys, webhook.Guard{AllowPrivate: true})
	srv.Config.Handler = httpapi.New(httpapi.Config{PublicBaseURL: base, Pages: pages}, st.Service, hooks, st.Signer,
		obs.NewRegistry("test"), obs.NewReadiness(), log)
	e := &env{st: st, URL: srv.URL, key: st.OwnerKey(t, "Acme Legal"), storage: startStorage(t), logs: logs, obs: counter}
	if o.mail {
		e.smtp = testkit.StartSMTP(t)
		startOTPDispatcher(t, st, e.smtp)
	}
	t.Cleanup(func() {
		// Whatever happened, no link token, code or session may reach the logs.
		for _, tok := range e.tokens() {
			if strings.Contains(e.logs.String(), tok) {
				t.Errorf("a link token appears in the server log:\n%s", e.logs.String())
			}
		}
	})
	return e
}

// startOTPDispatcher runs the notifier's OTP consumer in-process (as
// cmd/notifier does), mailing codes through a real SMTP client.
func startOTPDispatcher(t *testing.T, st *testkit.Stack, srv *testkit.SMTPServer) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	m, err := mail.NewSMTP(srv.URL(), "Sharelinks <no-reply@share.example.com>", mail.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	reg := prometheus.NewRegistry()
	w := delivery.New(postgres.NewStore(st.Pool, st.Relay.Wake), st.Keys, m, mail.IsTemporary,
		sms.NewLogSink(t.TempDir(), quiet), sms.IsTemporary,
		delivery.Config{
			PublicBaseURL: "https://share.example.com",
			Brand:         compose.Brand{Name: "Sharelinks"},
			OTP:           delivery.Retry{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond, Attempts: 2},
			Lease:         30 * time.Second,
		}, quiet, delivery.NewMetrics(reg))
	ctx, cancel := context.WithCancel(context.Background())
	spec := events.ConsumerSpec{Name: "otp", Types: []string{events.OTPRequested}, MaxDeliver: 8}
	cons, err := events.EnsureConsumer(ctx, st.JS, spec)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	wk := &events.Worker{Name: spec.Name, Consumer: cons, JS: st.JS, Handler: w.HandleOTP, OnDeadLetter: w.DeadOTP,
		Concurrency: 2, MaxDeliver: spec.MaxDeliver, Log: quiet, Metrics: events.NewConsumerMetrics(reg)}
	var wg sync.WaitGroup
	wg.Go(func() { _ = wk.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// codeIn finds the one-time code in an email's text.
var codeIn = regexp.MustCompile(`(?m)^\s+(\d{6})\s*$`)

// waitCode waits for the n-th email and returns its code.
func (e *env) waitCode(t *testing.T, n int) string {
	t.Helper()
	msgs := e.smtp.WaitMessages(t, n, 20*time.Second)
	m := codeIn.FindStringSubmatch(msgs[n-1].Text)
	if m == nil {
		t.Fatalf("no code in email %d:\n%s", n, msgs[n-1].Text)
	}
	return m[1]
}

// created is a new link as the owner API returns it.
type created struct {
	ID   string `json:"id"`
	URL  string `json:"url"`
	Path string `json:"-"` // /s/{token}
}

func (c created) token() string { return strings.TrimPrefix(c.Path, "/s/") }

type target struct {
	ID, Type, Name string
	NoURL          bool
}

type linkSpec struct {
	targets  []target
	linkType string
	auth     map[string]any // nil: open link
	title    string
	message  string
	maxUses  int
	expires  time.Duration
	otp      map[string]any // the link's otp_policy; nil: none
}

func password(pw string) map[string]any {
	return map[string]any{"auth_type": "password", "auth_context": pw}
}

func emailOTP(addr string) map[string]any {
	return map[string]any{"auth_type": "email_otp", "auth_context": addr}
}

// create makes a link through the owner API.
func (e *env) create(t *testing.T, s linkSpec) created {
	t.Helper()
	if len(s.targets) == 0 {
		s.targets = []target{{ID: "plan.pdf", Type: "file", Name: "Quarterly plan.pdf"}}
	}
	if s.linkType == "" {
		s.linkType = "download"
	}
	if s.expires == 0 {
		s.expires = 72 * time.Hour
	}
	var ts []any
	for _, tg := range s.targets {
		m := map[string]any{"id": tg.ID, "type": tg.Type, "name": tg.Name}
		if !tg.NoURL {
			m["url"] = e.storage.URL + "/files/" + url.PathEscape(tg.ID)
		}
		ts = append(ts, m)
	}
	spec := map[string]any{
		"targets": ts, "link_type": s.linkType, "title": s.title, "message": s.message,
		"expires_at": time.Now().Add(s.expires).UTC().Format(time.RFC3339),
	}
	if s.auth != nil {
		spec["authenticators"] = []any{s.auth}
	}
	if s.maxUses > 0 {
		spec["max_access_count"] = s.maxUses
	}
	if s.otp != nil {
		spec["otp_policy"] = s.otp
	}
	r := e.st.Do(t, "POST", "/v1/links", e.key, map[string]any{"links": []any{spec}})
	if r.Status != http.StatusCreated {
		t.Fatalf("create link: %d %s", r.Status, r.Body)
	}
	var out struct{ Links []created }
	r.JSON(t, &out)
	c := out.Links[0]
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.Path = u.Path
	e.storage.mu.Lock()
	e.storage.tokens = append(e.storage.tokens, c.token())
	e.storage.mu.Unlock()
	return c
}

func (e *env) tokens() []string {
	e.storage.mu.Lock()
	defer e.storage.mu.Unlock()
	return append([]string(nil), e.storage.tokens...)
}

// expire moves a link's expiry into the past, as time would.
func (e *env) expire(t *testing.T, c created) {
	t.Helper()
	if _, err := e.st.Pool.Exec(context.Background(),
		`UPDATE links SET expires_at = now() - interval '1 minute' WHERE id = $1`, c.ID); err != nil {
		t.Fatal(err)
	}
}

// storage is the owner's file host: it records each visit and its grant.
type storage struct {
	URL    string
	mu     sync.Mutex
	visits []visit
	tokens []string // link tokens created in this env (for the log check)
}

type visit struct {
	Path  string
	Grant grantClaims
}

type grantClaims struct {
	Sub string   `json:"sub"`
	Ops []string `json:"ops"`
	Lid string   `json:"lid"`
}

func startStorage(t *testing.T) *storage {
	s := &storage{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := visit{Path: r.URL.Path}
		if parts := strings.Split(r.URL.Query().Get("grant"), "."); len(parts) == 3 {
			if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
				_ = json.Unmarshal(raw, &v.Grant)
			}
		}
		s.mu.Lock()
		s.visits = append(s.visits, v)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html lang="en"><title>Storage</title><h1 id="storage">Owner storage</h1><p id="path">%s</p><p id="grant-sub">%s</p>`,
			v.Path, v.Grant.Sub)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *storage) Visits() []visit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]visit(nil), s.visits...)
}

// client is a browser-less visitor: it keeps cookies and does not follow
// redirects, so tests see each 303 of Post/Redirect/Get.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func (e *env) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: e.URL, hc: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	Status   int
	Header   http.Header
	Body     string
	Location string
}

func (c *client) do(req *http.Request) page {
	c.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return page{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Location: resp.Header.Get("Location")}
}

func (c *client) get(path string, headers ...string) page {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.do(req)
}

// post sends a form as a same-origin browser would (Sec-Fetch-Site and
// Origin), adding the CSRF token from the cookie jar unless form has one.
func (c *client) post(path string, form url.Values, headers ...string) page {
	c.t.Helper()
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", c.cookie(path, web.CSRFCookie))
	}
	req, err := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", c.base)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.do(req)
}

func (c *client) cookie(path, name string) string {
	u, _ := url.Parse(c.base + path)
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

// follow gets the Location of a redirect (on this server).
func (c *client) follow(p page) page {
	c.t.Helper()
	if p.Status != http.StatusSeeOther && p.Status != http.StatusFound {
		c.t.Fatalf("want a redirect, got %d\n%s", p.Status, p.Body)
	}
	return c.get(strings.TrimPrefix(p.Location, c.base))
}

// countingObserver records what the pages report for the OTP metrics.
type countingObserver struct {
	mu     sync.Mutex
	counts map[string]int
}

func (o *countingObserver) OTPRequest(result string) { o.add("request:" + result) }

func (o *countingObserver) OTPVerification(result string) { o.add("verify:" + result) }

func (o *countingObserver) add(k string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.counts[k]++
}

func (o *countingObserver) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[k]
}
