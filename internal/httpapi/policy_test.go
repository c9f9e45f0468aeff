package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// An operator's defaults and limits (DEFAULT_EXPIRY, MAX_ACCESS_COUNT)
// fill in what a spec leaves out and refuse what goes past them, on
// create and on change alike; without them expires_at is required and a
// link may be unlimited.
func TestOperatorDefaultExpiryAndAccessLimit(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "", func(c *link.Config) {
		c.Policy.DefaultExpiry = 48 * time.Hour
		c.Policy.MaxAccessCount = 3
	})
	key := st.OwnerKey(t, "o")
	bare := func(s map[string]any) { delete(s, "expires_at") }
	before := time.Now()
	l := create(t, st, key, spec(bare))[0]
	var v struct {
		ExpiresAt      time.Time `json:"expires_at"`
		MaxAccessCount *int      `json:"max_access_count"`
	}
	st.Do(t, "GET", "/v1/links/"+l.ID, key, nil).JSON(t, &v)
	if d := v.ExpiresAt.Sub(before); d < 48*time.Hour-time.Second || d > 48*time.Hour+5*time.Second {
		t.Fatalf("a link without expires_at expires in %s, want 48h", d)
	}
	if v.MaxAccessCount == nil || *v.MaxAccessCount != 3 {
		t.Fatalf("a link without a limit got %v, want the operator's 3", v.MaxAccessCount)
	}
	if two := create(t, st, key, spec(func(s map[string]any) { s["max_access_count"] = 2 }))[0]; two.ID == "" {
		t.Fatal("a link under the limit was refused")
	}
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{spec(func(s map[string]any) { s["max_access_count"] = 4 })}})
	if r.Status != http.StatusBadRequest || r.ErrorCode() != "max_access_count_too_high" {
		t.Fatalf("a link over the limit: %d %s", r.Status, r.Body)
	}
	for _, body := range []map[string]any{{"max_access_count": nil}, {"max_access_count": 10}} {
		if r := st.Do(t, "PATCH", "/v1/links/"+l.ID, key, body); r.Status != http.StatusBadRequest || r.ErrorCode() != "max_access_count_too_high" {
			t.Fatalf("PATCH %v past the limit: %d %s", body, r.Status, r.Body)
		}
	}
	if r := st.Do(t, "PATCH", "/v1/links/"+l.ID, key, map[string]any{"max_access_count": 1}); r.Status != http.StatusOK {
		t.Fatalf("PATCH within the limit: %d %s", r.Status, r.Body)
	}

	plain, plainKey := newStack(t)
	r = plain.Do(t, "POST", "/v1/links", plainKey, map[string]any{"links": []any{spec(bare)}})
	if r.Status != http.StatusBadRequest || r.ErrorCode() != "invalid_expires_at" {
		t.Fatalf("no expires_at and no default: %d %s", r.Status, r.Body)
	}
	if u := create(t, plain, plainKey, spec())[0]; u.ID == "" {
		t.Fatal("an unlimited link was refused without a limit set")
	}
}
