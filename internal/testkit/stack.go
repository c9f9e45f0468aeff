package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/grant"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/obs"
	"github.com/sharelinks/sharelinks/internal/password"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
	"github.com/sharelinks/sharelinks/internal/web"
	"github.com/sharelinks/sharelinks/internal/webhook"
	"github.com/sharelinks/sharelinks/schemas"
)

// MigratedDB is a fresh database with the schema applied, dropped when the
// test ends. Stacks need their own: relays of two stacks sharing one outbox
// would publish each other's events to the wrong NATS server.
func MigratedDB(tb testing.TB) string {
	tb.Helper()
	dbURL := Database(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := postgres.Migrate(ctx, dbURL); err != nil {
		tb.Fatal(err)
	}
	return dbURL
}

// Stack is the API running in-process against real Postgres and a real
// NATS server, with its outbox relay, on an httptest server.
type Stack struct {
	URL      string
	Pool     *pgxpool.Pool
	NATSURL  string
	NC       *nats.Conn
	JS       jetstream.JetStream
	Keys     *secret.Keys
	Signer   *grant.Signer
	Store    *postgres.Store
	Service  *link.Service
	Relay    *events.Relay
	Client   *http.Client
	Log      *slog.Logger
	Validate bool // check every response against schemas/openapi.yaml
}

// StackOption adjusts the link service config before start.
type StackOption func(*link.Config)

// TestSecret is the master secret test stacks share, so workers started
// separately derive the same keys.
const TestSecret = "c2hhcmVsaW5rcy10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"

// NewStack starts the API on dbURL and natsURL. An empty dbURL gets a fresh
// migrated database, an empty natsURL a fresh in-process NATS server.
func NewStack(tb testing.TB, dbURL, natsURL string, opts ...StackOption) *Stack {
	tb.Helper()
	ctx := context.Background()
	if dbURL == "" {
		dbURL = MigratedDB(tb)
	}
	if natsURL == "" {
		natsURL, _ = NATS(tb)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := postgres.Open(ctx, dbURL, 20)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	nc, err := events.Connect(natsURL, "test-api", log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	keys, err := secret.Parse(TestSecret)
	if err != nil {
		tb.Fatal(err)
	}
	reg := obs.NewRegistry("test")
	relay := events.NewRelay(pool, js, log, events.NewRelayMetrics(reg))
	relay.Poll = 200 * time.Millisecond
	store := postgres.NewStore(pool, relay.Wake)
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	tb.Cleanup(srv.Close)
	signer, err := grant.NewSigner(keys.GrantKey(), srv.URL, time.Minute)
	if err != nil {
		tb.Fatal(err)
	}
	auditSigner, err := evidence.NewSigner(keys.AuditKey(), srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := link.Config{PublicBaseURL: srv.URL, Policy: link.Policy{MaxExpiry: 365 * 24 * time.Hour}}
	for _, o := range opts {
		o(&cfg)
	}
	// Tests hash many passwords: the cheapest Argon2id keeps them fast.
	hasher := password.NewHasher(password.Params{Memory: 1024, Time: 1, Threads: 1}, 0)
	svc := link.NewService(store, keys, hasher, signer, cfg)
	ready := obs.NewReadiness()
	hooks := webhook.NewService(store, keys, webhook.Guard{AllowPrivate: true})
	metrics := httpapi.NewMetrics(reg)
	pages := web.New(svc, web.Config{PublicBaseURL: srv.URL, Log: log, Observer: metrics})
	srv.Config.Handler = httpapi.New(httpapi.Config{PublicBaseURL: srv.URL, Pages: pages, Metrics: metrics, RequestTimeout: 30 * time.Second,
		Evidence: auditSigner},
		svc, hooks, signer, reg, ready, log)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = relay.Run(rctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Stack{URL: srv.URL, Pool: pool, NATSURL: natsURL, NC: nc, JS: js, Keys: keys, Signer: signer,
		Store: store, Service: svc, Relay: relay, Client: client, Log: log, Validate: true}
}

// OwnerKey creates an owner with a fresh API key and returns the key.
func (s *Stack) OwnerKey(tb testing.TB, owner string) string {
	tb.Helper()
	key := secret.NewToken(link.APIKeyPrefix)
	if err := s.Store.CreateKey(context.Background(), owner, key[:12], secret.APIKeyHash(key)); err != nil {
		tb.Fatal(err)
	}
	return key
}

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r Response) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %d response %q: %v", r.Status, r.Body, err)
	}
}

// ErrorCode returns error.code of an error body.
func (r Response) ErrorCode() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// Do sends a request; body may be nil, []byte/string (sent raw) or any
// value (sent as JSON). bearer is sent as Authorization when not empty.
// Every response is checked against the OpenAPI document.
func (s *Stack) Do(tb testing.TB, method, path, bearer string, body any, headers ...string) Response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if s.Validate {
		if err := schemas.ValidateResponse(req, resp.StatusCode, resp.Header, raw); err != nil {
			tb.Errorf("%s %s → %d does not match openapi.yaml: %v\nbody: %s", method, path, resp.StatusCode, err, raw)
		}
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// ValidateEvents checks every event published to the stream so far
// against its JSON Schema: the events workers write as well as the API's.
// It returns how many it checked.
func (s *Stack) ValidateEvents(tb testing.TB) int {
	tb.Helper()
	ctx := context.Background()
	stream, err := s.JS.Stream(ctx, events.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	state := stream.CachedInfo().State
	n := 0
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("read event %d: %v", seq, err)
		}
		if err := schemas.ValidateEvent(msg.Data); err != nil {
			tb.Errorf("event on %s fails its schema: %v\n%s", msg.Subject, err, msg.Data)
		}
		n++
	}
	if n == 0 {
		tb.Error("no events in the stream to validate")
	}
	return n
}

// Count runs a query that returns one number (a count(*)), failing the
// test on error.
func (s *Stack) Count(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := s.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return n
}
