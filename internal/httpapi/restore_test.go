package httpapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

type restoredView struct {
	Status    string     `json:"status"`
	RevokedAt *time.Time `json:"revoked_at"`
	URL       string     `json:"url"`
}

// An owner who revoked links by mistake brings them back under the same
// URLs within the window: each returns to what its count and expiry make
// it, the sessions the revocation ended stay ended, and the trail records
// link.restored. Past the window, or on a link not revoked, nothing moves.
func TestRestoreBringsBackARevokedLink(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "", func(c *link.Config) { c.RestoreWindow = 7 * 24 * time.Hour })
	key := st.OwnerKey(t, "o")
	ctx := context.Background()
	ls := create(t, st, key,
		spec(func(s map[string]any) { s["tags"] = []any{"q3"} }),
		spec(func(s map[string]any) { s["tags"] = []any{"q3"}; s["max_access_count"] = 1 }),
		spec(func(s map[string]any) { s["tags"] = []any{"q3"} }),
		spec())
	open, once, lapsed, late := ls[0], ls[1], ls[2], ls[3]

	_, session := verify(t, st, open, map[string]any{})
	if r, _ := verify(t, st, once, map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("verify once: %d %s", r.Status, r.Body)
	}
	r := st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"tag": "q3"})
	if r.Status != http.StatusOK {
		t.Fatalf("revoke by tag: %d %s", r.Status, r.Body)
	}
	if r, _ := verify(t, st, open, map[string]any{}); r.Status != http.StatusNotFound {
		t.Fatalf("verify after the revoke: %d", r.Status)
	}
	// A revoke by tag takes active links only; the used-up one is revoked by id.
	if r := st.Do(t, "DELETE", "/v1/links/"+once.ID, key, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d", r.Status)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE links SET expires_at = now() - interval '1 second' WHERE id = $1`, lapsed.ID); err != nil {
		t.Fatal(err)
	}

	restore := func(id string) (testkit.Response, restoredView) {
		t.Helper()
		r := st.Do(t, "POST", "/v1/links/"+id+"/restore", key, nil)
		var v restoredView
		if r.Status == http.StatusOK {
			r.JSON(t, &v)
		}
		return r, v
	}
	// The three revoked ones in one call, with two that cannot be restored.
	missing := "00000000-0000-7000-8000-000000000000"
	r = st.Do(t, "POST", "/v1/links/restore", key, map[string]any{"ids": []string{open.ID, once.ID, late.ID, lapsed.ID, missing}})
	var bulk struct {
		Restored    []restoredView              `json:"restored"`
		NotRestored []struct{ ID, Code string } `json:"not_restored"`
	}
	if r.Status != http.StatusOK {
		t.Fatalf("bulk restore: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &bulk)
	refusals := map[string]string{}
	for _, n := range bulk.NotRestored {
		refusals[n.ID] = n.Code
	}
	if len(bulk.Restored) != 3 || len(refusals) != 2 || refusals[late.ID] != "not_revoked" || refusals[missing] != "link_not_found" {
		t.Fatalf("bulk restore: %s", r.Body)
	}
	for i, c := range []struct {
		l    linkResp
		want string
	}{{open, "active"}, {once, "exhausted"}, {lapsed, "expired"}} {
		var v restoredView
		for _, got := range bulk.Restored {
			if got.URL == c.l.URL {
				v = got
			}
		}
		if v.Status != c.want || v.RevokedAt != nil {
			t.Fatalf("restore %d of a link that is to be %s: %+v in %s", i, c.want, v, r.Body)
		}
		var recorded string
		if err := st.Pool.QueryRow(ctx, `SELECT data->>'status' FROM audit_events WHERE link_id = $1 AND type = 'link.restored'`,
			c.l.ID).Scan(&recorded); err != nil || recorded != c.want {
			t.Fatalf("link.restored of %s records %q (%v)", c.want, recorded, err)
		}
	}
	for _, body := range []map[string]any{{"ids": []string{}}, {"ids": []string{"x"}}, {"tag": "q3"}} {
		if r := st.Do(t, "POST", "/v1/links/restore", key, body); r.Status != http.StatusBadRequest {
			t.Fatalf("bulk restore %v: %d %s", body, r.Status, r.Body)
		}
	}
	// The same URL works again, but the session the revocation ended does not.
	if r := st.Do(t, "GET", open.path()+"/targets", session, nil); r.Status == http.StatusOK {
		t.Fatalf("a session from before the revocation opens targets after the restore: %s", r.Body)
	}
	if r, _ := verify(t, st, open, map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("verify after the restore: %d %s", r.Status, r.Body)
	}
	if r, _ := verify(t, st, once, map[string]any{}); r.Status != http.StatusNotFound {
		t.Fatalf("a restored exhausted link opened: %d", r.Status)
	}

	// Not revoked, another owner's, malformed, and past the window.
	if r, _ := restore(open.ID); r.Status != http.StatusConflict || r.ErrorCode() != "not_revoked" {
		t.Fatalf("restore of an active link: %d %s", r.Status, r.Body)
	}
	other := st.OwnerKey(t, "other")
	if r := st.Do(t, "POST", "/v1/links/"+late.ID+"/restore", other, nil); r.Status != http.StatusNotFound {
		t.Fatalf("another owner's link: %d %s", r.Status, r.Body)
	}
	if r, _ := restore("not-a-uuid"); r.Status != http.StatusNotFound {
		t.Fatalf("malformed id: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "DELETE", "/v1/links/"+late.ID, key, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d", r.Status)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE links SET revoked_at = now() - interval '8 days' WHERE id = $1`, late.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := restore(late.ID); r.Status != http.StatusConflict || r.ErrorCode() != "restore_window_passed" {
		t.Fatalf("restore past the window: %d %s", r.Status, r.Body)
	}
	if r, _ := verify(t, st, late, map[string]any{}); r.Status != http.StatusNotFound {
		t.Fatalf("a link past the window opened: %d", r.Status)
	}
	if n := st.Count(t, `SELECT count(*) FROM audit_events WHERE link_id = $1 AND type = 'link.restored'`, late.ID); n != 0 {
		t.Fatalf("%d link.restored for a refused restore", n)
	}
	st.ValidateEvents(t)
}

// With RESTORE_WINDOW at 0 a revocation is final.
func TestRestoreCanBeTurnedOff(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec())[0]
	if r := st.Do(t, "DELETE", "/v1/links/"+l.ID, key, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d", r.Status)
	}
	r := st.Do(t, "POST", "/v1/links/"+l.ID+"/restore", key, nil)
	if r.Status != http.StatusConflict || r.ErrorCode() != "restore_disabled" {
		t.Fatalf("restore with the window off: %d %s", r.Status, r.Body)
	}
}
