package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
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

// What the operator sets for one owner narrows the service's settings for
// that owner alone: a shorter maximum expiry, a default one, an access
// limit, no open links, and its own code defaults, which its code links
// keep (under what each link sets itself).
func TestOwnerPolicyNarrowsTheServicesForOneOwner(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	ctx := context.Background()
	set := func(p link.OwnerPolicy) {
		t.Helper()
		if err := st.Store.SetOwnerPolicy(ctx, "owner-"+t.Name(), p); err != nil {
			t.Fatal(err)
		}
	}
	set(link.OwnerPolicy{MaxExpiry: 30 * 86400, DefaultExpiry: 7 * 86400, MaxAccessCount: 5, ForbidOpenLinks: true,
		OTP: &link.OTPPolicy{CodeLength: 8}})
	r := st.Do(t, "GET", "/v1/policy", key, nil)
	want := `{"default_expiry":604800,"forbid_open_links":true,"max_access_count":5,"max_expiry":2592000,` +
		`"otp_policy":{"code_length":8,"code_ttl":600,"max_attempts":5,"resend_after":30}}`
	if r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != want {
		t.Fatalf("GET /v1/policy: %d %s\nwant %s", r.Status, r.Body, want)
	}

	for _, c := range []struct {
		spec map[string]any
		code string
	}{
		{spec(), "open_links_forbidden"},
		{spec(withPassword("correct horse"), func(s map[string]any) { s["expires_at"] = future(60 * 24 * time.Hour) }), "invalid_expires_at"},
		{spec(withPassword("correct horse"), func(s map[string]any) { s["max_access_count"] = 6 }), "max_access_count_too_high"},
	} {
		if r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{c.spec}}); r.Status != http.StatusBadRequest || r.ErrorCode() != c.code {
			t.Errorf("want %s: %d %s", c.code, r.Status, r.Body)
		}
	}
	before := time.Now()
	ls := create(t, st, key,
		spec(withPassword("correct horse"), func(s map[string]any) { delete(s, "expires_at") }),
		spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "kim@example.com"}}
			s["otp_policy"] = map[string]any{"max_attempts": 3}
		}))
	var pw struct {
		ExpiresAt      time.Time `json:"expires_at"`
		MaxAccessCount *int      `json:"max_access_count"`
	}
	st.Do(t, "GET", "/v1/links/"+ls[0].ID, key, nil).JSON(t, &pw)
	if d := pw.ExpiresAt.Sub(before); d < 7*24*time.Hour-time.Second || d > 7*24*time.Hour+5*time.Second || pw.MaxAccessCount == nil || *pw.MaxAccessCount != 5 {
		t.Fatalf("a link that set neither: expires in %s, limit %v; want the owner's 7 days and 5", d, pw.MaxAccessCount)
	}
	otpOf := func(id string) string {
		t.Helper()
		var v struct {
			OTP json.RawMessage `json:"otp_policy"`
		}
		st.Do(t, "GET", "/v1/links/"+id, key, nil).JSON(t, &v)
		return string(v.OTP)
	}
	if got := otpOf(ls[1].ID); got != `{"code_length":8,"code_ttl":600,"max_attempts":3,"resend_after":30}` {
		t.Fatalf("the code link's policy: %s", got)
	}
	// The link keeps the owner's defaults it was made with, even when the
	// owner's policy changes later; PATCH null takes the owner's current ones.
	set(link.OwnerPolicy{OTP: &link.OTPPolicy{CodeLength: 7}})
	if got := otpOf(ls[1].ID); got != `{"code_length":8,"code_ttl":600,"max_attempts":3,"resend_after":30}` {
		t.Fatalf("after the owner's policy changed: %s", got)
	}
	if r := st.Do(t, "PATCH", "/v1/links/"+ls[1].ID, key, map[string]any{"otp_policy": nil}); r.Status != http.StatusOK {
		t.Fatalf("PATCH null: %d %s", r.Status, r.Body)
	}
	if got := otpOf(ls[1].ID); got != `{"code_length":7,"code_ttl":600,"max_attempts":5,"resend_after":30}` {
		t.Fatalf("after PATCH null: %s", got)
	}
	// Open links are allowed again, and another owner never had the policy.
	if l := create(t, st, key, spec())[0]; l.ID == "" {
		t.Fatal("open link refused after the policy changed")
	}
	other := st.OwnerKey(t, "other")
	if r := st.Do(t, "GET", "/v1/policy", other, nil); !strings.Contains(string(r.Body), `"max_expiry":31536000`) ||
		!strings.Contains(string(r.Body), `"default_expiry":null`) {
		t.Fatalf("another owner's policy: %s", r.Body)
	}
	set(link.OwnerPolicy{})
	var stored *string
	if err := st.Pool.QueryRow(ctx, `SELECT policy::text FROM owners WHERE name = $1`, "owner-"+t.Name()).Scan(&stored); err != nil || stored != nil {
		t.Fatalf("a cleared policy is stored as %v (%v)", stored, err)
	}
}
