package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
	"github.com/sharelinks/sharelinks/internal/webhook"
	"github.com/sharelinks/sharelinks/schemas"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startWorkers runs the webhook dispatcher against the stack, as the
// notifier does. Events need no consumer: each is recorded (audit row and
// deliveries) by the statement that writes it.
func startWorkers(t *testing.T, st *testkit.Stack, cfg webhook.DispatcherConfig) {
	t.Helper()
	store := postgres.NewStore(st.Pool, st.Relay.Wake)
	d := webhook.NewDispatcher(store, st.Keys, webhook.Guard{AllowPrivate: true}, cfg, quiet, webhook.NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

type received struct {
	sig, deliveryID, eventType string
	body                       []byte
	at                         time.Time
}

// receiver is a loopback webhook endpoint whose answers a test scripts.
type receiver struct {
	mu      sync.Mutex
	got     []received
	answers []int // status per request in order; 0 = hang past the timeout; empty = 204
	srv     *httptest.Server
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	r := &receiver{answers: answers}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{req.Header.Get(webhook.SignatureHeader), req.Header.Get("Sharelinks-Delivery-Id"),
			req.Header.Get("Sharelinks-Event-Type"), body, time.Now()})
		code := http.StatusNoContent
		if len(r.answers) > 0 {
			code, r.answers = r.answers[0], r.answers[1:]
		}
		r.mu.Unlock()
		if code == 0 {
			time.Sleep(700 * time.Millisecond) // longer than the dispatcher's timeout
			code = http.StatusNoContent
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func checkSignature(t *testing.T, secret string, rc received) {
	t.Helper()
	parts := map[string]string{}
	for _, p := range strings.Split(rc.sig, ",") {
		k, v, _ := strings.Cut(p, "=")
		parts[k] = v
	}
	ts, err := strconv.ParseInt(parts["t"], 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Fatalf("bad timestamp in %q", rc.sig)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts["t"] + "."))
	mac.Write(rc.body)
	if !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(parts["v1"])) {
		t.Fatalf("signature %q does not verify", rc.sig)
	}
	if err := schemas.ValidateEvent(rc.body); err != nil {
		t.Fatalf("delivered body is not a valid event: %v", err)
	}
}

func createLink(t *testing.T, st *testkit.Stack, key string, maxAccess int) (id, path string) {
	t.Helper()
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{map[string]any{
		"targets":          []any{map[string]any{"id": "f", "type": "file", "url": "https://storage.example.com/f"}},
		"link_type":        "view",
		"expires_at":       time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"max_access_count": maxAccess,
	}}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var out struct {
		Links []struct{ ID, URL string }
	}
	r.JSON(t, &out)
	u, _ := url.Parse(out.Links[0].URL)
	return out.Links[0].ID, u.Path
}

func TestWebhookSignedAndRetriedAfter500AndTimeout(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	rcv := newReceiver(t, 500, 0, 200)
	startWorkers(t, st, webhook.DispatcherConfig{Base: 100 * time.Millisecond, Timeout: 300 * time.Millisecond, Poll: 50 * time.Millisecond})
	r := st.Do(t, "POST", "/v1/webhooks", key, map[string]any{"url": rcv.srv.URL + "/hook", "events": []string{"link.opened"}})
	if r.Status != 201 {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}
	var hook struct{ ID, Secret string }
	r.JSON(t, &hook)
	if !strings.HasPrefix(hook.Secret, "whsec_") {
		t.Fatalf("secret %q", hook.Secret)
	}
	if list := st.Do(t, "GET", "/v1/webhooks", key, nil); strings.Contains(string(list.Body), hook.Secret) {
		t.Fatal("secret shown again in the list")
	}
	_, path := createLink(t, st, key, 5)
	if r := st.Do(t, "GET", path+"/open", "", nil); r.Status != 302 {
		t.Fatalf("open: %d", r.Status)
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return len(rcv.requests()) >= 3 }, "three attempts reach the receiver")
	got := rcv.requests()
	for _, rc := range got {
		checkSignature(t, hook.Secret, rc)
		if rc.eventType != "link.opened" || rc.deliveryID != got[0].deliveryID {
			t.Fatalf("attempt %+v", rc)
		}
	}
	if gap := got[1].at.Sub(got[0].at); gap < 80*time.Millisecond {
		t.Fatalf("retried after %s, before the backoff", gap)
	}
	var ds struct {
		Deliveries []struct {
			Status         string `json:"status"`
			Attempts       int    `json:"attempts"`
			LastStatusCode *int   `json:"last_status_code"`
		} `json:"deliveries"`
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		st.Do(t, "GET", "/v1/webhooks/"+hook.ID+"/deliveries", key, nil).JSON(t, &ds)
		return len(ds.Deliveries) == 1 && ds.Deliveries[0].Status == "delivered"
	}, "delivery recorded as delivered")
	if d := ds.Deliveries[0]; d.Attempts != 3 || d.LastStatusCode == nil || *d.LastStatusCode != 200 {
		t.Fatalf("delivery %+v", d)
	}
	other := st.OwnerKey(t, "other")
	if r := st.Do(t, "GET", "/v1/webhooks/"+hook.ID+"/deliveries", other, nil); r.Status != 404 {
		t.Fatalf("other owner sees deliveries: %d", r.Status)
	}
	if r := st.Do(t, "DELETE", "/v1/webhooks/"+hook.ID, key, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}
}

func TestWebhookRefusesPrivateURLsUnlessAllowed(t *testing.T) {
	t.Parallel()
	g := webhook.Guard{}
	for _, u := range []string{"http://127.0.0.1/x", "http://10.1.2.3/x", "http://[::1]/x", "http://169.254.169.254/latest", "http://localhost:8080/x", "ftp://example.com/x", "http://user:pw@example.com/"} {
		if err := g.Validate(context.Background(), u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	if err := g.Validate(context.Background(), "https://93.184.215.14/hook"); err != nil {
		t.Errorf("public address refused: %v", err)
	}
	if err := (webhook.Guard{AllowPrivate: true}).Validate(context.Background(), "http://127.0.0.1:9/x"); err != nil {
		t.Errorf("allowed private refused: %v", err)
	}
	// The connect-time check holds even if validation was bypassed.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	if _, err := g.Client(time.Second).Get(srv.URL); err == nil || !strings.Contains(err.Error(), "private") {
		t.Fatalf("client reached a loopback address: %v", err)
	}
}

func TestAuditTrailOfALinksWholeLife(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	startWorkers(t, st, webhook.DispatcherConfig{})
	id, path := createLink(t, st, key, 2)
	var access struct {
		AccessToken string `json:"access_token"`
	}
	st.Do(t, "POST", path+"/verify", "", map[string]any{}).JSON(t, &access)
	st.Do(t, "GET", path+"/open", access.AccessToken, nil, "User-Agent", "audit-test-agent")
	st.Do(t, "POST", path+"/verify", "", map[string]any{})
	id2, _ := createLink(t, st, key, 1)
	st.Do(t, "DELETE", "/v1/links/"+id2, key, nil)

	want := []string{"link.exhausted", "link.verified", "link.opened", "link.verified", "link.created"}
	var page struct {
		Events []struct {
			Type  string       `json:"type"`
			Actor events.Actor `json:"actor"`
			Data  json.RawMessage
		} `json:"events"`
		Last string `json:"last"`
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		page.Events = nil
		st.Do(t, "GET", "/v1/links/"+id+"/events", key, nil).JSON(t, &page)
		return len(page.Events) == len(want)
	}, "five audit events for the link")
	seen := map[string]int{}
	for _, e := range page.Events {
		seen[e.Type]++
		if e.Type == "link.opened" && (e.Actor.Type != "recipient" || e.Actor.IP == "" || e.Actor.UserAgent != "audit-test-agent") {
			t.Errorf("opened actor %+v", e.Actor)
		}
		if e.Type == "link.created" && !strings.HasPrefix(e.Actor.KeyPrefix, "slk_") {
			t.Errorf("created actor %+v", e.Actor)
		}
	}
	for _, w := range want {
		if seen[w] == 0 {
			t.Errorf("missing %s in %v", w, seen)
		}
	}
	if page.Events[0].Type != "link.exhausted" && page.Events[0].Type != "link.verified" {
		t.Errorf("newest first: got %s first", page.Events[0].Type)
	}
	// Paging and filters across the owner's links.
	var small struct {
		Events []struct{ ID string } `json:"events"`
		Last   string                `json:"last"`
	}
	st.Do(t, "GET", "/v1/events?size=2", key, nil).JSON(t, &small)
	if len(small.Events) != 2 || small.Last == "" {
		t.Fatalf("first page %+v", small)
	}
	var revoked struct {
		Events []struct {
			LinkID string `json:"link_id"`
		} `json:"events"`
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		st.Do(t, "GET", "/v1/events?type=link.revoked", key, nil).JSON(t, &revoked)
		return len(revoked.Events) == 1
	}, "revocation recorded")
	if revoked.Events[0].LinkID != id2 {
		t.Fatalf("revoked %+v", revoked)
	}
	if r := st.Do(t, "GET", "/v1/links/"+id+"/events", st.OwnerKey(t, "x"), nil); r.Status != 404 {
		t.Fatalf("other owner: %d", r.Status)
	}
	// Redelivery inserts nothing twice.
	var n int
	if err := st.Pool.QueryRow(context.Background(), `SELECT count(*) - count(DISTINCT id) FROM audit_events`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("duplicate audit rows: %d %v", n, err)
	}
}

// Sweeps record their events themselves (set-wise, in the statement that
// expires or purges): the audit trail and subscribed webhooks get them
// all the same, exactly once, with bodies that are valid events.
func TestSweptEventsReachAuditTrailAndWebhooks(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	ctx := context.Background()
	key := st.OwnerKey(t, "o")
	rcv := newReceiver(t)
	startWorkers(t, st, webhook.DispatcherConfig{Poll: 50 * time.Millisecond})
	r := st.Do(t, "POST", "/v1/webhooks", key, map[string]any{"url": rcv.srv.URL, "events": []string{"link.expired", "link.purged"}})
	if r.Status != 201 {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}
	var hook struct{ Secret string }
	r.JSON(t, &hook)
	id, _ := createLink(t, st, key, 5)
	other := st.OwnerKey(t, "other") // has no webhook: its link's events go to the audit trail only
	otherID, _ := createLink(t, st, other, 5)
	store := postgres.NewStore(st.Pool, st.Relay.Wake)
	if _, err := st.Pool.Exec(ctx, `UPDATE links SET expires_at = now() - interval '1 second' WHERE id = ANY($1::uuid[])`, []string{id, otherID}); err != nil {
		t.Fatal(err)
	}
	if n, err := store.ExpireDue(ctx, 100); err != nil || n != 2 {
		t.Fatalf("expired %d, %v", n, err)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE links SET ended_at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	if n, err := store.PurgeEnded(ctx, time.Hour, 100); err != nil || n != 2 {
		t.Fatalf("purged %d, %v", n, err)
	}

	testkit.Eventually(t, 10*time.Second, func() bool { return len(rcv.requests()) >= 2 }, "both swept events delivered")
	time.Sleep(200 * time.Millisecond) // room for a wrong third delivery to show
	got := rcv.requests()
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2 (the other owner has no webhook)", len(got))
	}
	auditIDs := map[string]string{}
	var types []string
	for _, rc := range got {
		checkSignature(t, hook.Secret, rc)
		if err := schemas.ValidateEvent(rc.body); err != nil {
			t.Fatalf("delivered body is not a valid event: %v\n%s", err, rc.body)
		}
		var e events.Event
		if err := json.Unmarshal(rc.body, &e); err != nil {
			t.Fatal(err)
		}
		if e.LinkID != id || e.Type != rc.eventType || e.Actor.Type != "system" {
			t.Fatalf("delivered %+v as %s", e, rc.eventType)
		}
		auditIDs[e.ID] = e.Type
		types = append(types, e.Type)
	}
	if !slices.Equal(slices.Sorted(slices.Values(types)), []string{"link.expired", "link.purged"}) {
		t.Fatalf("delivered %v", types)
	}
	// The audit trail has each swept event once, under the id the webhook
	// saw, for both owners; the link is gone, its record is not.
	for _, c := range []struct{ key, link string }{{key, id}, {other, otherID}} {
		var page struct {
			Events []struct{ ID, Type string } `json:"events"`
		}
		st.Do(t, "GET", "/v1/events?link_id="+c.link, c.key, nil).JSON(t, &page)
		seen := map[string]int{}
		for _, e := range page.Events {
			seen[e.Type]++
			if c.link == id && (e.Type == "link.expired" || e.Type == "link.purged") && auditIDs[e.ID] != e.Type {
				t.Errorf("audit %s has id %s, the webhook saw %v", e.Type, e.ID, auditIDs)
			}
		}
		if seen["link.expired"] != 1 || seen["link.purged"] != 1 || seen["link.created"] != 1 {
			t.Fatalf("audit trail of %s: %v", c.link, seen)
		}
	}
}

// Every event records itself, in the statement that writes it: with no
// consumer and no dispatcher running at all, the audit trail has
// link.created, link.verified, link.exhausted, link.opened and
// link.revoked the moment the requests answer, and a subscribed webhook
// has a delivery of each, whose body is the published event. Nothing an
// owner reads depends on the event surviving the stream.
func TestEveryEventIsRecordedByItsOwnStatement(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	ctx := context.Background()
	key := st.OwnerKey(t, "o")
	rcv := newReceiver(t) // never called: no dispatcher runs here
	if r := st.Do(t, "POST", "/v1/webhooks", key, map[string]any{"url": rcv.srv.URL,
		"events": []string{"link.created", "link.verified", "link.exhausted", "link.opened", "link.revoked"}}); r.Status != 201 {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}
	id, path := createLink(t, st, key, 1)
	var access struct {
		AccessToken string `json:"access_token"`
	}
	st.Do(t, "POST", path+"/verify", "", map[string]any{}).JSON(t, &access)
	if r := st.Do(t, "GET", path+"/open", access.AccessToken, nil); r.Status != 302 {
		t.Fatalf("open: %d %s", r.Status, r.Body)
	}
	revokedID, _ := createLink(t, st, key, 1)
	if r := st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"ids": []string{revokedID}}); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}

	recorded := func(linkID string) []string {
		t.Helper()
		rows, err := st.Pool.Query(ctx, `SELECT a.type, a.id::text, d.payload FROM audit_events a
			JOIN webhook_deliveries d ON d.event_id = a.id WHERE a.link_id = $1 ORDER BY a.type`, linkID)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for rows.Next() {
			var typ, eventID string
			var payload []byte
			if err := rows.Scan(&typ, &eventID, &payload); err != nil {
				t.Fatal(err)
			}
			if err := schemas.ValidateEvent(payload); err != nil {
				t.Fatalf("delivery body of %s is not a valid event: %v\n%s", typ, err, payload)
			}
			var e events.Event
			if err := json.Unmarshal(payload, &e); err != nil {
				t.Fatal(err)
			}
			if e.ID != eventID || e.Type != typ || e.LinkID != linkID {
				t.Errorf("audit row %s %s, delivered %+v", typ, eventID, e)
			}
			types = append(types, typ)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return types
	}
	if got, want := recorded(id), []string{"link.created", "link.exhausted", "link.opened", "link.verified"}; !slices.Equal(got, want) {
		t.Errorf("recorded with a delivery: %v, want %v", got, want)
	}
	if got, want := recorded(revokedID), []string{"link.created", "link.revoked"}; !slices.Equal(got, want) {
		t.Errorf("recorded with a delivery: %v, want %v", got, want)
	}
}

// The receiver accepted a delivery and the database went away before the
// dispatcher could record it: the outcome is recorded when the database
// is back, and the receiver is not sent the same delivery again when the
// claim's lease runs out.
func TestDeliveryAcceptedDuringADatabaseOutageIsRecordedNotResent(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	var (
		mu    sync.Mutex
		posts int
		back  = make(chan time.Time, 1)
	)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		posts++
		first := posts == 1
		mu.Unlock()
		if first {
			reopen := testkit.DatabaseOutage(t, st.Pool.Config().ConnConfig)
			go func() {
				time.Sleep(1500 * time.Millisecond)
				reopen()
				back <- time.Now()
			}()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)
	startWorkers(t, st, webhook.DispatcherConfig{Base: 100 * time.Millisecond, Timeout: 300 * time.Millisecond, Poll: 50 * time.Millisecond})
	if r := st.Do(t, "POST", "/v1/webhooks", key, map[string]any{"url": rcv.URL + "/hook", "events": []string{"link.created"}}); r.Status != 201 {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}
	id, _ := createLink(t, st, key, 1)
	var reopened time.Time
	select {
	case reopened = <-back:
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery reached the receiver")
	}
	status := func() string {
		var s string
		err := st.Pool.QueryRow(context.Background(), `SELECT d.status FROM webhook_deliveries d
			JOIN audit_events a ON a.id = d.event_id WHERE a.link_id = $1`, id).Scan(&s)
		if err != nil {
			return err.Error()
		}
		return s
	}
	// Well before the lease (the timeout + 30 s) would have run out.
	testkit.Eventually(t, 5*time.Second, func() bool { return status() == "delivered" }, "delivered, recorded after the outage")
	t.Logf("recorded %s after the database came back", time.Since(reopened).Round(time.Millisecond))
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	if posts != 1 {
		t.Fatalf("%d POSTs, want 1", posts)
	}
}
