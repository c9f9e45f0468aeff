package httpapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// patch sends PATCH /v1/links/{id} and returns the answer.
func patch(t *testing.T, st *testkit.Stack, key, id string, body any) testkit.Response {
	t.Helper()
	return st.Do(t, "PATCH", "/v1/links/"+id, key, body)
}

// An owner changes a link in place, under the same URL: more time brings
// an expired link back and a higher limit an exhausted one; a lower limit
// ends it; a revoked link stays revoked; each change is one link.updated.
func TestUpdateALinkInPlace(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	other := st.OwnerKey(t, "other-"+t.Name())
	l := create(t, st, key, spec(func(s map[string]any) { s["max_access_count"] = 2 }))[0]
	updated := func() int { return st.Count(t, `SELECT count(*) FROM audit_events WHERE type = 'link.updated'`) }
	ok := func(body any) linkResp {
		t.Helper()
		r := patch(t, st, key, l.ID, body)
		if r.Status != http.StatusOK {
			t.Fatalf("patch %v: %d %s", body, r.Status, r.Body)
		}
		var v linkResp
		r.JSON(t, &v)
		return v
	}
	verifies := func() int {
		t.Helper()
		r, _ := verify(t, st, l, map[string]any{})
		return r.Status
	}

	// Bad changes are 400s and change nothing.
	for _, tc := range []struct {
		body any
		code string
	}{
		{map[string]any{}, "empty_update"},
		{map[string]any{"expires_at": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, "invalid_expires_at"},
		{map[string]any{"expires_at": time.Now().Add(400 * 24 * time.Hour).UTC().Format(time.RFC3339)}, "invalid_expires_at"},
		{map[string]any{"max_access_count": 0}, "invalid_max_access_count"},
		{map[string]any{"max_access_count": 1.5}, "invalid_max_access_count"},
		{map[string]any{"max_access_count": "3"}, "invalid_max_access_count"},
		{map[string]any{"title": "a\u0000b"}, "invalid_title"},
		{map[string]any{"allowed_networks": []string{"nope"}}, "invalid_network"},
		{map[string]any{"status": "active"}, "unknown_field"},
	} {
		if r := patch(t, st, key, l.ID, tc.body); r.Status != 400 || r.ErrorCode() != tc.code {
			t.Errorf("patch %v: %d %s, want 400 %s", tc.body, r.Status, r.Body, tc.code)
		}
	}
	for _, id := range []string{"00000000-0000-0000-0000-000000000000", "not-a-uuid"} {
		if r := patch(t, st, key, id, map[string]any{"title": "x"}); r.Status != 404 {
			t.Errorf("patch %s: %d %s", id, r.Status, r.Body)
		}
	}
	if r := patch(t, st, other, l.ID, map[string]any{"title": "x"}); r.Status != 404 {
		t.Errorf("another owner's patch: %d %s", r.Status, r.Body)
	}
	if n := updated(); n != 0 {
		t.Fatalf("refused changes wrote %d link.updated", n)
	}

	v := ok(map[string]any{"title": "Q4 report", "max_access_count": 3})
	if v.ID != l.ID || v.URL != l.URL || v.MaxAccessCount == nil || *v.MaxAccessCount != 3 || v.Status != "active" {
		t.Fatalf("after the change: %+v", v)
	}
	var data struct {
		Changed []string
		Status  string
	}
	if err := st.Pool.QueryRow(context.Background(), `SELECT data->'changed', data->>'status' FROM audit_events
		WHERE type = 'link.updated'`).Scan(&data.Changed, &data.Status); err != nil {
		t.Fatal(err)
	}
	if len(data.Changed) != 2 || data.Changed[0] != "max_access_count" || data.Changed[1] != "title" || data.Status != "active" {
		t.Errorf("link.updated data %+v", data)
	}
	ok(map[string]any{"title": "Q4 report", "max_access_count": 3}) // nothing new
	if n := updated(); n != 1 {
		t.Errorf("%d link.updated after a change and a no-op, want 1", n)
	}

	// Used up, then given more.
	for range 3 {
		if s := verifies(); s != 200 {
			t.Fatalf("verify: %d", s)
		}
	}
	if s := verifies(); s != 404 {
		t.Fatalf("verify past the limit: %d", s)
	}
	if v := ok(map[string]any{"max_access_count": nil}); v.Status != "active" || v.MaxAccessCount != nil {
		t.Fatalf("no limit: %+v", v)
	}
	if s := verifies(); s != 200 {
		t.Fatalf("verify after lifting the limit: %d", s)
	}
	// A limit at what was counted ends it; below it is refused.
	if r := patch(t, st, key, l.ID, map[string]any{"max_access_count": 3}); r.Status != 409 || r.ErrorCode() != "max_below_access_count" {
		t.Fatalf("limit under the count: %d %s", r.Status, r.Body)
	}
	if v := ok(map[string]any{"max_access_count": 4}); v.Status != "exhausted" {
		t.Fatalf("limit at the count: %+v", v)
	}
	if s := verifies(); s != 404 {
		t.Fatalf("verify after lowering the limit: %d", s)
	}

	// Expired (and swept), then given more time: the same URL works again.
	if _, err := st.Pool.Exec(context.Background(), `UPDATE links SET max_access_count = NULL, status = 'expired',
		expires_at = now() - interval '1 minute', ended_at = now() WHERE id = $1`, l.ID); err != nil {
		t.Fatal(err)
	}
	if v := ok(map[string]any{"expires_at": future(48 * time.Hour)}); v.Status != "active" {
		t.Fatalf("more time: %+v", v)
	}
	if n := st.Count(t, `SELECT count(*) FROM links WHERE id = $1 AND ended_at IS NULL`, l.ID); n != 1 {
		t.Error("a link brought back keeps its purge clock")
	}
	if s := verifies(); s != 200 {
		t.Fatalf("verify after more time: %d", s)
	}

	// Past its expiry but not yet swept: a change leaves expiring to the
	// reaper, which writes its link.expired.
	late := create(t, st, key, spec())[0]
	if _, err := st.Pool.Exec(context.Background(), `UPDATE links SET expires_at = now() - interval '1 second' WHERE id = $1`, late.ID); err != nil {
		t.Fatal(err)
	}
	r := patch(t, st, key, late.ID, map[string]any{"title": "late"})
	var lv linkResp
	r.JSON(t, &lv)
	if r.Status != 200 || lv.Status != "expired" || st.Count(t, `SELECT count(*) FROM links WHERE id = $1 AND status = 'active'`, late.ID) != 1 {
		t.Fatalf("unswept link: %d %s", r.Status, r.Body)
	}

	// Networks can be set and lifted.
	ok(map[string]any{"allowed_networks": []string{"203.0.113.0/24"}})
	if s := verifies(); s != 403 {
		t.Fatalf("verify from outside the new networks: %d", s)
	}
	ok(map[string]any{"allowed_networks": []string{}})
	if s := verifies(); s != 200 {
		t.Fatalf("verify after lifting the networks: %d", s)
	}

	// Revoked stays revoked.
	if r := st.Do(t, "DELETE", "/v1/links/"+l.ID, key, nil); r.Status != 204 {
		t.Fatalf("revoke: %d", r.Status)
	}
	if r := patch(t, st, key, l.ID, map[string]any{"expires_at": future(72 * time.Hour)}); r.Status != 409 || r.ErrorCode() != "link_revoked" {
		t.Fatalf("patch a revoked link: %d %s", r.Status, r.Body)
	}
	st.ValidateEvents(t)
}

// A reminder still to come moves with the expiry: it stays REMIND_BEFORE
// ahead of the new one.
func TestMoreTimeMovesTheReminder(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "", func(c *link.Config) { c.RemindBefore = 24 * time.Hour })
	key := st.OwnerKey(t, "owner-"+t.Name())
	l := create(t, st, key, spec(func(s map[string]any) {
		s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "ann@example.com"}}
		s["notify"] = true
		s["expires_at"] = future(72 * time.Hour)
	}))[0]
	remindAt := func() time.Time {
		var at time.Time
		if err := st.Pool.QueryRow(context.Background(), `SELECT remind_at FROM notifications WHERE link_id = $1`, l.ID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	if d := time.Until(remindAt()) - 48*time.Hour; d.Abs() > time.Minute {
		t.Fatalf("reminder at %v, want in 48 h", remindAt())
	}
	if r := patch(t, st, key, l.ID, map[string]any{"expires_at": future(120 * time.Hour)}); r.Status != 200 {
		t.Fatalf("more time: %d %s", r.Status, r.Body)
	}
	if d := time.Until(remindAt()) - 96*time.Hour; d.Abs() > time.Minute {
		t.Fatalf("reminder at %v after more time, want in 96 h", remindAt())
	}
}
