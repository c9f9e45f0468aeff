package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

func TestMigrateKeysAndServeEndToEnd(t *testing.T) {
	dbURL := testkit.Database(t)
	natsURL, _ := testkit.NATS(t)
	ctx := context.Background()
	common := []string{"--database-url", dbURL}
	for range 2 { // idempotent
		var out bytes.Buffer
		if err := run(ctx, append([]string{"migrate"}, common...), &out); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, append([]string{"keys", "create", "--owner", "acme"}, common...), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	key := lines[len(lines)-1]
	if !strings.HasPrefix(key, "slk_") || len(key) < 30 {
		t.Fatalf("last line %q is not a key", key)
	}
	out.Reset()
	if err := run(ctx, append([]string{"keys", "list"}, common...), &out); err != nil || !strings.Contains(out.String(), key[:12]) || strings.Contains(out.String(), key) {
		t.Fatalf("keys list: %v\n%s", err, out.String())
	}

	base, stop := startServe(t, dbURL, natsURL)
	req, _ := http.NewRequest("GET", base+"/v1/links", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	r, err := http.DefaultClient.Do(req)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("list with the new key: %v %v", r, err)
	}
	r.Body.Close()
	// One write, so the group commit histogram has an observation.
	// Its own request: req is sent again below, and a spent body must not be.
	create, _ := http.NewRequest("POST", base+"/v1/links", strings.NewReader(`{"links":[{
		"targets":[{"id":"a","type":"file","url":"https://example.com/a"}],
		"link_type":"view","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}]}`))
	create.Header.Set("Authorization", "Bearer "+key)
	create.Header.Set("Content-Type", "application/json")
	if r, err = http.DefaultClient.Do(create); err != nil || r.StatusCode != 201 {
		t.Fatalf("create a link: %v %v", r, err)
	}
	r.Body.Close()
	body := testkit.Metrics(t, base)
	for _, want := range []string{"sharelinks_build_info", `sharelinks_http_requests_total{code="200",method="GET",route="GET /v1/links"} 1`,
		`sharelinks_db_group_commit_requests_bucket{le="1"} 1`, "process_resident_memory_bytes", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, key) {
		t.Error("metrics contain the API key")
	}
	out.Reset()
	if err := run(ctx, append([]string{"keys", "revoke", key[:12]}, common...), &out); err != nil {
		t.Fatal(err)
	}
	// The key was remembered by the request above; the revocation reaches
	// the api by NOTIFY, within moments and long before the cache's TTL.
	testkit.Eventually(t, 3*time.Second, func() bool {
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 401
	}, "revoked key refused")
	if err := stop(); err != nil { // SIGTERM
		t.Fatalf("serve exit: %v", err)
	}
}

// startServe runs `api serve` on a free port until stop (SIGTERM: its context
// ends), which returns serve's result; base is its URL, already ready.
func startServe(t *testing.T, dbURL, natsURL string, flags ...string) (base string, stop func() error) {
	t.Helper()
	port := testkit.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--database-url", dbURL, "--nats-url", natsURL,
			"--sharelinks-secret", testkit.TestSecret, "--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "error"},
			flags...), io.Discard)
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("serve did not stop")
		}
	})
	t.Cleanup(func() { _ = stop() })
	base = fmt.Sprintf("http://127.0.0.1:%d", port)
	testkit.Eventually(t, 10*time.Second, func() bool {
		r, err := http.Get(base + "/readyz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	}, "api ready")
	return base, stop
}

func TestMissingOrUnreachableDependencyIsOneClearLine(t *testing.T) {
	natsURL, _ := testkit.NATS(t)
	dbURL := testkit.Database(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret}, "DATABASE_URL is not set"},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", "c2hvcnQ="}, "SHARELINKS_SECRET decodes to 5 bytes"},
		{[]string{"serve", "--database-url", "postgres://nobody:secretpw@127.0.0.1:1/x", "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret, "--http-addr", "127.0.0.1:0"}, "DATABASE_URL: connect to postgres://nobody:xxxxx@127.0.0.1:1/x"},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", "nats://127.0.0.1:1", "--sharelinks-secret", testkit.TestSecret, "--http-addr", "127.0.0.1:0"}, "NATS_URL: connect to nats://127.0.0.1:1"},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret, "--sms-regions", "US,XX"}, `SMS_REGIONS: "XX" is not a region`},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret, "--otp-code-length", "5"}, "OTP_*: code length 5: must be 6 to 10 digits"},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret, "--otp-ttl", "30m"}, "OTP_*: code lifetime 30m0s: must be 1m0s to 10m0s"},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret, "--default-expiry", "9000h"}, "DEFAULT_EXPIRY: 9000h0m0s is not within MAX_EXPIRY (8760h0m0s)"},
		{[]string{"serve", "--database-url", dbURL, "--nats-url", natsURL, "--sharelinks-secret", testkit.TestSecret, "--password-max-attempts", "0"}, "PASSWORD_MAX_ATTEMPTS: 0: must be 1 to 20"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, c.args, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want one line with %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("password shown: %v", err)
		}
	}
}

// SIGTERM while requests are in flight: each of them is answered, and the
// events they committed are in JetStream when the process is gone (the
// relay flushes after the last request, not at the signal). Password links
// keep the requests in flight: their hashes run one at a time.
func TestShutdownAnswersInFlightRequestsAndFlushesTheirEvents(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	key := newKey(t, dbURL)
	ctx := context.Background()

	base, stop := startServe(t, dbURL, natsURL, "--password-hash-concurrency", "1")

	// Each request on a connection of its own: a keep-alive connection that
	// sits idle when the signal comes is closed, and a request written to it
	// in that instant fails (HTTP's own race; clients retry), which is not
	// what this test is about.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	const n = 12
	var first sync.Once
	firstAnswer := make(chan struct{})
	var sent, answered sync.WaitGroup
	ids := make([]string, n)
	codes := make([]int, n)
	errs := make([]error, n)
	sent.Add(n)
	answered.Add(n)
	for i := range n {
		go func() {
			defer answered.Done()
			var once sync.Once
			wrote := func() { once.Do(sent.Done) }
			defer wrote() // a request that failed before it was written still counts
			body := fmt.Sprintf(`{"links":[{"targets":[{"id":"f","type":"file","url":"https://example.com/f"}],
				"link_type":"view","expires_at":%q,
				"authenticators":[{"auth_type":"password","auth_context":"correct horse battery staple %d"}]}]}`,
				time.Now().Add(time.Hour).UTC().Format(time.RFC3339), i)
			req, _ := http.NewRequest("POST", base+"/v1/links", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			req = req.WithContext(httptrace.WithClientTrace(req.Context(),
				&httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wrote() }}))
			r, err := client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer r.Body.Close()
			first.Do(func() { close(firstAnswer) })
			codes[i] = r.StatusCode
			var got struct {
				Links []struct {
					ID string `json:"id"`
				} `json:"links"`
			}
			if err := json.NewDecoder(r.Body).Decode(&got); err == nil && len(got.Links) == 1 {
				ids[i] = got.Links[0].ID
			}
		}()
	}
	sent.Wait()
	// The first answer comes after a hash: by then the server has accepted
	// every connection (accepting takes microseconds), and most of the
	// requests still wait for their hash.
	select {
	case <-firstAnswer:
	case <-time.After(30 * time.Second):
		t.Fatal("no request was answered")
	}
	if err := stop(); err != nil { // SIGTERM
		t.Fatalf("serve exit: %v", err)
	}
	answered.Wait()
	want := map[string]bool{}
	for i := range n {
		if errs[i] != nil || codes[i] != 201 || ids[i] == "" {
			t.Fatalf("request %d in flight at the signal: %d %v", i, codes[i], errs[i])
		}
		want[ids[i]] = true
	}

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d outbox rows left behind by a clean shutdown", left)
	}
	stream, err := testkit.JetStream(t, natsURL).Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject != events.SubjectPrefix+events.LinkCreated {
			continue
		}
		e, err := events.Parse(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		delete(want, e.LinkID)
	}
	if len(want) != 0 {
		t.Errorf("%d of %d links answered 201 have no link.created in JetStream after the shutdown", len(want), n)
	}
}

// While the api cannot reach Postgres, /readyz says so (503, postgres
// failing) and so does sharelinks_ready on /metrics, which the
// SharelinksDependencyUnreachable alert reads; both recover by themselves
// when Postgres takes connections again.
func TestReadinessFollowsADatabaseOutage(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	base, _ := startServe(t, dbURL, natsURL)
	state := func() (readyz int, metric string) {
		t.Helper()
		r, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		for _, line := range strings.Split(testkit.Metrics(t, base), "\n") {
			if v, ok := strings.CutPrefix(line, `sharelinks_ready{check="postgres"} `); ok {
				metric = v
			}
		}
		return r.StatusCode, metric
	}
	if code, m := state(); code != 200 || m != "1" {
		t.Fatalf("before the outage: /readyz %d, sharelinks_ready{check=postgres} %q; want 200 and 1", code, m)
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	reopen := testkit.DatabaseOutage(t, cfg)
	testkit.Eventually(t, 10*time.Second, func() bool { code, m := state(); return code == 503 && m == "0" },
		"/readyz 503 and sharelinks_ready 0 during the outage")
	reopen()
	testkit.Eventually(t, 10*time.Second, func() bool { code, m := state(); return code == 200 && m == "1" },
		"/readyz 200 and sharelinks_ready 1 after the outage")
}

// A database that hangs rather than refuses (here: a lock the request's
// statement waits on) costs a client REQUEST_TIMEOUT and a 503 with
// Retry-After, not a request held open until TCP gives up; the api serves
// again as soon as the database does.
func TestAHungDatabaseIsA503AfterTheRequestTimeout(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	key := newKey(t, dbURL)
	ctx := context.Background()
	base, _ := startServe(t, dbURL, natsURL, "--request-timeout", "1s")
	list := func() (*http.Response, []byte, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/v1/links", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		start := time.Now()
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		body, _ := io.ReadAll(r.Body)
		return r, body, time.Since(start)
	}
	if r, body, _ := list(); r.StatusCode != 200 {
		t.Fatalf("before the lock: %d %s", r.StatusCode, body)
	}
	locker, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE links IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	r, body, took := list()
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"unavailable"`) {
		t.Errorf("while the table is locked: %d, Retry-After %q, %s; want 503 unavailable", r.StatusCode, r.Header.Get("Retry-After"), body)
	}
	if took < time.Second || took > 10*time.Second {
		t.Errorf("answered after %s, want about the 1 s REQUEST_TIMEOUT", took)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { r, _, _ := list(); return r.StatusCode == 200 }, "served again after the lock")
}

// Behind the operator's proxy, the audit trail names the recipient, not
// the proxy; a client that is not the proxy cannot name itself.
func TestTrustedProxiesNameTheRecipientInTheAuditTrail(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	key := newKey(t, dbURL)
	do := func(base, method, path, auth, xff, body string) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		raw, _ := io.ReadAll(r.Body)
		if r.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, r.StatusCode, raw)
		}
		return raw
	}
	verifiedFrom := func(flags ...string) string {
		base, stop := startServe(t, dbURL, natsURL, flags...)
		defer func() { _ = stop() }()
		var created struct {
			Links []struct{ ID, URL string }
		}
		raw := do(base, "POST", "/v1/links", key, "", `{"links":[{"targets":[{"id":"f","type":"file","url":"https://example.com/f"}],
			"link_type":"view","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}]}`)
		if err := json.Unmarshal(raw, &created); err != nil || len(created.Links) != 1 {
			t.Fatalf("create: %v %s", err, raw)
		}
		path := created.Links[0].URL[strings.Index(created.Links[0].URL, "/s/"):]
		do(base, "POST", path+"/verify", "", "198.51.100.1, 203.0.113.7", `{}`)
		var evs struct {
			Events []struct {
				Type  string
				Actor struct{ IP string }
			}
		}
		if err := json.Unmarshal(do(base, "GET", "/v1/links/"+created.Links[0].ID+"/events", key, "", ""), &evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Events {
			if e.Type == "link.verified" {
				return e.Actor.IP
			}
		}
		t.Fatalf("no link.verified event in %+v", evs)
		return ""
	}
	if ip := verifiedFrom("--trusted-proxies", "127.0.0.1/32"); ip != "203.0.113.7" {
		t.Errorf("behind a trusted proxy the recipient is %q, want 203.0.113.7", ip)
	}
	if ip := verifiedFrom(); ip != "127.0.0.1" {
		t.Errorf("with no trusted proxy the recipient is %q, want the peer 127.0.0.1 (X-Forwarded-For is anyone's)", ip)
	}
}

// newKey creates an owner's API key with `api keys create` and returns it
// (its last line of output).
func newKey(t *testing.T, dbURL string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "create", "--owner", "acme", "--database-url", dbURL}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1]
}
