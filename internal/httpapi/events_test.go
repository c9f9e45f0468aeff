package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/testkit"
	"github.com/sharelinks/sharelinks/schemas"
)

// streamEvents reads every event in the stream (by direct get, so polling
// creates no consumers), validating each against its schema, and returns
// those of the given links (all when linkIDs is nil).
func streamEvents(t *testing.T, js jetstream.JetStream, linkIDs map[string]bool) []events.Event {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	state := stream.CachedInfo().State
	var out []events.Event
	for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("read event %d: %v", seq, err)
		}
		if err := schemas.ValidateEvent(msg.Data); err != nil {
			t.Errorf("event on %s fails its schema: %v\n%s", msg.Subject, err, msg.Data)
		}
		e, err := events.Parse(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject != e.Subject() || msg.Header.Get("Nats-Msg-Id") != e.ID {
			t.Errorf("subject %s / msg id %s for event %s %s", msg.Subject, msg.Header.Get("Nats-Msg-Id"), e.Type, e.ID)
		}
		if linkIDs == nil || linkIDs[e.LinkID] {
			out = append(out, e)
		}
	}
	return out
}

func TestEveryPublishedEventMatchesItsSchema(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	ls := create(t, st, key,
		spec(func(s map[string]any) {
			s["max_access_count"] = 1
			s["authenticators"] = []any{
				map[string]any{"auth_type": "password", "auth_context": "correct horse battery"},
				map[string]any{"auth_type": "email_otp", "auth_context": "ann@example.com"},
			}
			s["notify"] = true
			// A start already past: the flows below work, and link.created
			// carries it, checked against its schema.
			s["not_before"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		}))
	if r, _ := verify(t, st, ls[0], map[string]string{"password": "nope nope nope"}); r.Status != 401 {
		t.Fatal(r.Status)
	}
	r, access := verify(t, st, ls[0], map[string]string{"password": "correct horse battery"})
	if r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := st.Do(t, "GET", ls[0].path()+"/open", access, nil); r.Status != 302 {
		t.Fatal(r.Status)
	}
	st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{ls[1].ID}, "recipients": []string{"bo@example.com"}})
	st.Do(t, "DELETE", "/v1/links/"+ls[1].ID, key, nil)
	// An open link's verify writes its events in SQL (one statement).
	// So does opening a target with a session; target ids are the owner's
	// strings and must come out escaped.
	const odd = `a"b\c`
	open := create(t, st, key, spec(func(s map[string]any) {
		s["max_access_count"] = 1
		s["targets"] = []any{
			map[string]any{"id": odd, "type": "file", "url": "https://storage.example.com/odd"},
			map[string]any{"id": "plain", "type": "file", "url": "https://storage.example.com/plain"},
		}
	}))[0]
	r, openAccess := verify(t, st, open, map[string]any{})
	if r.Status != 200 {
		t.Fatalf("open verify: %d %s", r.Status, r.Body)
	}
	if r, _ := verify(t, st, open, map[string]any{}); r.Status != 404 {
		t.Fatalf("verify of a used-up open link: %d", r.Status)
	}
	if r := st.Do(t, "GET", open.path()+"/open", openAccess, nil); r.Status != 400 || r.ErrorCode() != "target_required" {
		t.Fatalf("open without a target of a two-target link: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "GET", open.path()+"/open?target=nope", openAccess, nil); r.Status != 404 {
		t.Fatalf("open of a missing target: %d %s", r.Status, r.Body)
	}
	or := st.Do(t, "GET", open.path()+"/open?target="+url.QueryEscape(odd), openAccess, nil)
	if or.Status != 302 {
		t.Fatalf("open of %q: %d %s", odd, or.Status, or.Body)
	}
	loc, err := url.Parse(or.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	// Only the grant's id is needed here (its signature is checked in
	// TestPasswordLinkVerifyOpenGrantVerifiesAgainstJWKS).
	grantTok, err := jwt.ParseSigned(loc.Query().Get("grant"), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	var claims jwt.Claims
	if err := grantTok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}

	want := map[string]int{
		events.LinkCreated: 3, events.NotificationRequested: 2, events.LinkVerifyFailed: 1,
		events.LinkVerified: 2, events.LinkExhausted: 2, events.LinkOpened: 2, events.LinkRevoked: 1,
	}
	ids := map[string]bool{ls[0].ID: true, ls[1].ID: true, open.ID: true}
	var got map[string]int
	var evs []events.Event
	testkit.Eventually(t, 10*time.Second, func() bool {
		got = map[string]int{}
		evs = streamEvents(t, st.JS, ids)
		for _, e := range evs {
			got[e.Type]++
		}
		return fmt.Sprint(got) == fmt.Sprint(want)
	}, "events in stream differ from %v", want)
	t.Logf("events: %v", got)
	for _, e := range evs {
		if e.LinkID != open.ID {
			continue
		}
		switch e.Type {
		case events.LinkVerified:
			var d events.VerifiedData
			if err := json.Unmarshal(e.Data, &d); err != nil || d.AccessCount != 1 || d.SessionID == "" {
				t.Errorf("open link's link.verified data %s (%v)", e.Data, err)
			}
			if e.Actor.Type != "recipient" || e.Actor.IP == "" || e.Actor.UserAgent == "" {
				t.Errorf("open link's link.verified actor %+v", e.Actor)
			}
		case events.LinkOpened:
			var d events.OpenedData
			if err := json.Unmarshal(e.Data, &d); err != nil || d.TargetID != odd || d.GrantID != claims.ID {
				t.Errorf("link.opened data %s (%v), want target %q and grant %s", e.Data, err, odd, claims.ID)
			}
			if e.Actor.Type != "recipient" || e.Actor.IP == "" {
				t.Errorf("link.opened actor %+v", e.Actor)
			}
		case events.LinkExhausted:
			if string(e.Data) != `{"access_count":1}` || e.Actor.Type != "system" {
				t.Errorf("open link's link.exhausted: data %s actor %+v", e.Data, e.Actor)
			}
		}
		if e.OwnerID == "" || time.Since(e.OccurredAt) > time.Minute {
			t.Errorf("open link's %s envelope: owner %q at %v", e.Type, e.OwnerID, e.OccurredAt)
		}
	}
}

func TestEventsSurviveNATSOutage(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), testkit.FreePort(t)
	srv := testkit.NATSAt(t, dir, port)
	st := testkit.NewStack(t, "", srv.ClientURL())
	key := st.OwnerKey(t, "owner-"+t.Name())
	before := create(t, st, key, spec())[0]
	testkit.Eventually(t, 10*time.Second, func() bool {
		return len(streamEvents(t, st.JS, map[string]bool{before.ID: true})) == 1
	}, "first event published")

	srv.Shutdown()
	srv.WaitForShutdown()
	// NATS is down: creating links still succeeds at once.
	ids := map[string]bool{}
	for range 5 {
		start := time.Now()
		l := create(t, st, key, spec())[0]
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("create took %s while NATS was down", d)
		}
		ids[l.ID] = true
	}
	var pending int
	if err := st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending < 5 {
		t.Fatalf("%d unpublished outbox rows while NATS is down, want ≥5", pending)
	}

	testkit.NATSAt(t, dir, port)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return len(streamEvents(t, st.JS, ids)) == 5
	}, "events written during the outage reach JetStream after it returns")
	// Exactly once in the stream despite any relay retries (dedup on Nats-Msg-Id).
	seen := map[string]int{}
	for _, e := range streamEvents(t, st.JS, nil) {
		seen[e.ID]++
		if seen[e.ID] > 1 {
			t.Fatalf("event %s published twice", e.ID)
		}
	}
}

func TestPaginationWhileCreatingHasNoDuplicatesOrGaps(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	var existing []map[string]any
	for range 95 {
		existing = append(existing, spec())
	}
	initial := map[string]bool{}
	for _, l := range create(t, st, key, existing...) {
		initial[l.ID] = true
	}
	for _, order := range []string{"asc", "desc"} {
		for _, by := range []string{"created_at", "expires_at"} {
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // a writer creating links during the walk
				defer wg.Done()
				for ctx.Err() == nil {
					create(t, st, key, spec(), spec())
				}
			}()
			seen := map[string]bool{}
			last := ""
			pages := 0
			for {
				q := url.Values{"size": {"7"}, "order": {order}, "order_by": {by}}
				if last != "" {
					q.Set("last", last)
				}
				r := st.Do(t, "GET", "/v1/links?"+q.Encode(), key, nil)
				var page struct {
					Links []linkResp
					Count int
					Last  string
				}
				r.JSON(t, &page)
				if r.Status != 200 {
					t.Fatalf("page: %d %s", r.Status, r.Body)
				}
				for _, l := range page.Links {
					if seen[l.ID] {
						t.Fatalf("%s %s: %s seen twice", by, order, l.ID)
					}
					seen[l.ID] = true
				}
				pages++
				if page.Last == "" {
					break
				}
				last = page.Last
			}
			stop()
			wg.Wait()
			for id := range initial {
				if !seen[id] {
					t.Fatalf("%s %s: walk of %d pages skipped %s", by, order, pages, id)
				}
			}
		}
	}
	bad := st.Do(t, "GET", "/v1/links?size=101", key, nil)
	if bad.Status != 400 {
		t.Fatalf("size=101: %d", bad.Status)
	}
	if r := st.Do(t, "GET", "/v1/links?last=garbage", key, nil); r.Status != 400 {
		t.Fatalf("bad cursor: %d", r.Status)
	}
	var filtered struct{ Count int }
	st.Do(t, "GET", "/v1/links?target_id=report.pdf&status=active&link_type=view", key, nil).JSON(t, &filtered)
	if filtered.Count < 95 {
		t.Fatalf("filtered count %d", filtered.Count)
	}
	var none struct{ Count int }
	st.Do(t, "GET", "/v1/links?target_id=other.pdf", key, nil).JSON(t, &none)
	if none.Count != 0 {
		t.Fatalf("target filter matched %d", none.Count)
	}
}
