package httpapi_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

// idemCreate posts one create with an Idempotency-Key and returns the
// response and the ids of the links in it.
func idemCreate(t *testing.T, st *testkit.Stack, key, idemKey string, specs ...map[string]any) (testkit.Response, []string) {
	t.Helper()
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": specs}, "Idempotency-Key", idemKey)
	var out struct{ Links []linkResp }
	if r.Status == http.StatusCreated {
		r.JSON(t, &out)
	}
	ids := make([]string, len(out.Links))
	for i, l := range out.Links {
		ids[i] = l.ID
	}
	return r, ids
}

func replayed(r testkit.Response) bool { return r.Header.Get("Idempotent-Replayed") == "true" }

func TestIdempotencyKeyMakesACreateRetrySafe(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	other := st.OwnerKey(t, "other-"+t.Name())
	otp := spec(func(s map[string]any) {
		s["authenticators"] = []any{
			map[string]any{"auth_type": "email_otp", "auth_context": "ann@example.com"},
			map[string]any{"auth_type": "sms_otp", "auth_context": "+442071838750"},
		}
		s["notify"] = true
	})
	first, ids := idemCreate(t, st, key, "order-42", otp)
	if first.Status != 201 || len(ids) != 2 || replayed(first) {
		t.Fatalf("first: %d replayed=%v %s", first.Status, replayed(first), first.Body)
	}
	// The answer was lost; the client sends the same request again, with
	// its fields in another order: the same links, with the same urls.
	again := map[string]any{}
	for k, v := range otp {
		again[k] = v
	}
	retry, retryIDs := idemCreate(t, st, key, "order-42", again)
	if retry.Status != 201 || !replayed(retry) || !slices.Equal(ids, retryIDs) {
		t.Fatalf("retry: %d replayed=%v ids %v, want %v", retry.Status, replayed(retry), retryIDs, ids)
	}
	var a, b struct{ Links []linkResp }
	first.JSON(t, &a)
	retry.JSON(t, &b)
	for i := range a.Links {
		if a.Links[i].URL != b.Links[i].URL {
			t.Errorf("link %d: url %s, then %s", i, a.Links[i].URL, b.Links[i].URL)
		}
	}
	count := func() (links, notes, created int) {
		return countLinks(t, st, key),
			st.Count(t, `SELECT count(*) FROM notifications`),
			st.Count(t, `SELECT count(*) FROM audit_events WHERE type = 'link.created'`)
	}
	if l, n, c := count(); l != 2 || n != 2 || c != 2 {
		t.Fatalf("after a retry: %d links, %d notifications, %d link.created; want 2 each", l, n, c)
	}

	// The same key for another request is a mistake the client must hear of.
	r, _ := idemCreate(t, st, key, "order-42", spec())
	if r.Status != 422 || r.ErrorCode() != "idempotency_key_reused" {
		t.Fatalf("same key, other body: %d %s", r.Status, r.Body)
	}
	send := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": ids[:1], "recipients": []string{"bob@example.com"}},
		"Idempotency-Key", "order-42")
	if send.Status != 422 || send.ErrorCode() != "idempotency_key_reused" {
		t.Fatalf("same key, other operation: %d %s", send.Status, send.Body)
	}
	for _, bad := range []string{"with space", strings.Repeat("k", 256), "naïve"} {
		if r, _ := idemCreate(t, st, key, bad, spec()); r.Status != 400 || r.ErrorCode() != "invalid_idempotency_key" {
			t.Errorf("key %.20q: %d %s", bad, r.Status, r.Body)
		}
	}
	if l, n, c := count(); l != 2 || n != 2 || c != 2 {
		t.Fatalf("refused requests wrote: %d links, %d notifications, %d link.created", l, n, c)
	}

	// Keys are the owner's own.
	if r, otherIDs := idemCreate(t, st, other, "order-42", otp); r.Status != 201 || replayed(r) || slices.Equal(otherIDs, ids) {
		t.Fatalf("another owner's same key: %d replayed=%v %s", r.Status, replayed(r), r.Body)
	}

	// A replay shows the links as they are now.
	if r := st.Do(t, "DELETE", "/v1/links/"+ids[0], key, nil); r.Status != 204 && r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	retry, _ = idemCreate(t, st, key, "order-42", otp)
	retry.JSON(t, &b)
	if !replayed(retry) || b.Links[0].Status != "revoked" || b.Links[1].Status != "active" {
		t.Fatalf("replay after a revoke: replayed=%v %s", replayed(retry), retry.Body)
	}

	// After a day the key is free again, swept or not.
	if _, err := st.Pool.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours'`); err != nil {
		t.Fatal(err)
	}
	late, lateIDs := idemCreate(t, st, key, "order-42", otp)
	if late.Status != 201 || replayed(late) || slices.Equal(lateIDs, ids) {
		t.Fatalf("a day later: %d replayed=%v %s", late.Status, replayed(late), late.Body)
	}
	if n, err := st.Store.DeleteOldIdempotencyKeys(context.Background(), 100); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v; want the other owner's day-old key", n, err)
	}
	if n := st.Count(t, `SELECT count(*) FROM idempotency_keys`); n != 1 {
		t.Fatalf("%d keys left, want the fresh one", n)
	}
}

// Clients that time out and retry at once race their own first request:
// whichever commits first makes the links, and every other request,
// however it interleaves with it, is answered with them.
func TestConcurrentRequestsWithOneKeyMakeOneResult(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	const clients = 16
	for round := range 3 {
		idemKey := "race-" + string(rune('a'+round))
		otp := spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "ann@example.com"}}
			s["notify"] = true
		})
		var mu sync.Mutex
		var wg sync.WaitGroup
		made, replays := 0, 0
		seen := map[string]bool{}
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, ids := idemCreate(t, st, key, idemKey, otp)
				mu.Lock()
				defer mu.Unlock()
				if r.Status != 201 || len(ids) != 1 {
					t.Errorf("%d %s", r.Status, r.Body)
					return
				}
				seen[ids[0]] = true
				if replayed(r) {
					replays++
				} else {
					made++
				}
			}()
		}
		wg.Wait()
		if made != 1 || replays != clients-1 || len(seen) != 1 {
			t.Fatalf("round %d: %d made, %d replayed, %d distinct links", round, made, replays, len(seen))
		}
	}
	if n := countLinks(t, st, key); n != 3 {
		t.Fatalf("%d links, want 3", n)
	}
	var l string
	if err := st.Pool.QueryRow(context.Background(), `SELECT id::text FROM links LIMIT 1`).Scan(&l); err != nil {
		t.Fatal(err)
	}
	// Sends race the same way: one notification, whoever wins.
	var wg sync.WaitGroup
	statuses := make([]int, clients)
	notes := make([]string, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l}, "recipients": []string{"bob@example.com"}},
				"Idempotency-Key", "send-1")
			var out struct{ Notifications []struct{ ID string } }
			if r.Status == 202 {
				r.JSON(t, &out)
			}
			statuses[i] = r.Status
			if len(out.Notifications) == 1 {
				notes[i] = out.Notifications[0].ID
			}
		}()
	}
	wg.Wait()
	for i := range clients {
		if statuses[i] != 202 || notes[i] == "" || notes[i] != notes[0] {
			t.Fatalf("send %d: %d, notification %q (first %q)", i, statuses[i], notes[i], notes[0])
		}
	}
	if n := st.Count(t, `SELECT count(*) FROM notifications WHERE recipient = 'bob@example.com'`); n != 1 {
		t.Fatalf("%d notifications to bob, want 1", n)
	}
	if n := st.Count(t, `SELECT count(*) FROM audit_events WHERE type = 'notification.requested' AND data->>'notification_id' = $1`, notes[0]); n != 1 {
		t.Fatalf("%d notification.requested events for it, want 1", n)
	}
	text := testkit.Metrics(t, st.URL)
	for _, want := range []string{
		`sharelinks_idempotent_replays_total{operation="create_links"} ` + strconv.Itoa(3*(clients-1)),
		`sharelinks_idempotent_replays_total{operation="send_links"} ` + strconv.Itoa(clients-1),
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
