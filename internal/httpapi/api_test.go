package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

type linkResp struct {
	ID             string `json:"id"`
	URL            string `json:"url"`
	Status         string `json:"status"`
	LinkType       string `json:"link_type"`
	AccessCount    int    `json:"access_count"`
	MaxAccessCount *int   `json:"max_access_count"`
	Authenticator  struct {
		AuthType    string `json:"auth_type"`
		AuthContext string `json:"auth_context"`
	} `json:"authenticator"`
	CreatedAt time.Time `json:"created_at"`
}

func (l linkResp) path() string {
	u, _ := url.Parse(l.URL)
	return u.Path
}

func future(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }

func spec(mods ...func(map[string]any)) map[string]any {
	s := map[string]any{
		"targets":    []any{map[string]any{"id": "report.pdf", "type": "file", "url": "https://storage.example.com/files/report.pdf"}},
		"link_type":  "view",
		"expires_at": future(7 * 24 * time.Hour),
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func withPassword(pw string) func(map[string]any) {
	return func(s map[string]any) {
		s["authenticators"] = []any{map[string]any{"auth_type": "password", "auth_context": pw}}
	}
}

func create(t *testing.T, st *testkit.Stack, key string, specs ...map[string]any) []linkResp {
	t.Helper()
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": specs})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var out struct{ Links []linkResp }
	r.JSON(t, &out)
	return out.Links
}

func verify(t *testing.T, st *testkit.Stack, l linkResp, body any) (testkit.Response, string) {
	t.Helper()
	r := st.Do(t, "POST", l.path()+"/verify", "", body)
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if r.Status == http.StatusOK {
		r.JSON(t, &v)
	}
	return r, v.AccessToken
}

func newStack(t *testing.T) (*testkit.Stack, string) {
	st := testkit.NewStack(t, "", "")
	return st, st.OwnerKey(t, "owner-"+t.Name())
}

func TestPasswordLinkVerifyOpenGrantVerifiesAgainstJWKS(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec(withPassword("correct horse battery")))[0]
	if l.Authenticator.AuthType != "password" || l.Authenticator.AuthContext != "" {
		t.Fatalf("password must never be shown: %+v", l.Authenticator)
	}
	info := st.Do(t, "GET", l.path(), "", nil)
	if info.Status != 200 || !strings.Contains(string(info.Body), `"auth_type":"password"`) {
		t.Fatalf("landing json: %d %s", info.Status, info.Body)
	}
	if r, _ := verify(t, st, l, map[string]string{"password": "wrong password"}); r.Status != 401 {
		t.Fatalf("wrong password: %d %s", r.Status, r.Body)
	}
	r, access := verify(t, st, l, map[string]string{"password": "correct horse battery"})
	if r.Status != 200 || access == "" {
		t.Fatalf("verify: %d %s", r.Status, r.Body)
	}
	cookie := r.Header.Get("Set-Cookie")
	for _, want := range []string{"sl_access=" + access, "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("cookie %q lacks %q", cookie, want)
		}
	}
	targets := st.Do(t, "GET", l.path()+"/targets", access, nil)
	if targets.Status != 200 || !strings.Contains(string(targets.Body), "report.pdf") {
		t.Fatalf("targets: %d %s", targets.Status, targets.Body)
	}
	open := st.Do(t, "GET", l.path()+"/open", access, nil)
	if open.Status != http.StatusFound {
		t.Fatalf("open: %d %s", open.Status, open.Body)
	}
	loc, err := url.Parse(open.Header.Get("Location"))
	if err != nil || loc.Host != "storage.example.com" {
		t.Fatalf("redirect to %q", open.Header.Get("Location"))
	}
	// Verify the grant as the owner's storage would: with the published JWKS.
	jwksResp := st.Do(t, "GET", "/.well-known/jwks.json", "", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksResp.Body, &set); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(loc.Query().Get("grant"), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in JWKS", tok.Headers[0].KeyID)
	}
	var std jwt.Claims
	var custom struct {
		LID string   `json:"lid"`
		Ops []string `json:"ops"`
	}
	if err := tok.Claims(keys[0].Key, &std, &custom); err != nil {
		t.Fatalf("grant signature: %v", err)
	}
	if err := std.Validate(jwt.Expected{Issuer: st.URL, Subject: "report.pdf", Time: time.Now()}); err != nil {
		t.Fatalf("grant claims: %v", err)
	}
	if custom.LID != l.ID || len(custom.Ops) != 1 || custom.Ops[0] != "view" || std.ID == "" {
		t.Fatalf("grant claims: %+v %+v", std, custom)
	}
	if ttl := std.Expiry.Time().Sub(std.IssuedAt.Time()); ttl != time.Minute {
		t.Fatalf("grant lifetime %s", ttl)
	}
	// A forged token from another key must not verify.
	other := st.Do(t, "GET", l.path()+"/open", "sla_forged", nil)
	if other.Status != 401 {
		t.Fatalf("forged access token: %d", other.Status)
	}
	got := st.Do(t, "GET", "/v1/links/"+l.ID, key, nil)
	var after linkResp
	got.JSON(t, &after)
	if after.AccessCount != 1 {
		t.Fatalf("access_count %d, want 1", after.AccessCount)
	}
}

func TestConcurrentVerifiesNeverExceedMaxAccessCount(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	for _, tc := range []struct{ max, clients int }{{3, 10}, {7, 50}} {
		l := create(t, st, key, spec(func(s map[string]any) { s["max_access_count"] = tc.max }))[0]
		var ok, notFound, other int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range tc.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, _ := verify(t, st, l, map[string]any{})
				mu.Lock()
				defer mu.Unlock()
				switch r.Status {
				case 200:
					ok++
				case 404:
					notFound++
				default:
					other++
				}
			}()
		}
		wg.Wait()
		if ok != tc.max || notFound != tc.clients-tc.max || other != 0 {
			t.Fatalf("max %d, %d clients: %d ok, %d not found, %d other", tc.max, tc.clients, ok, notFound, other)
		}
		if r := st.Do(t, "GET", l.path(), "", nil); r.Status != 404 || r.ErrorCode() != "link_not_found" {
			t.Fatalf("exhausted link: %d %s", r.Status, r.Body)
		}
		var got linkResp
		st.Do(t, "GET", "/v1/links/"+l.ID, key, nil).JSON(t, &got)
		if got.Status != "exhausted" || got.AccessCount != tc.max {
			t.Fatalf("after: %+v", got)
		}
	}
}

func TestRevokeStopsLinkAtOnce(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	ls := create(t, st, key, spec(), spec(), spec())
	r, access := verify(t, st, ls[0], map[string]any{})
	if r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := st.Do(t, "DELETE", "/v1/links/"+ls[0].ID, key, nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	for _, p := range []string{"", "/targets", "/open"} {
		if r := st.Do(t, "GET", ls[0].path()+p, access, nil); r.Status != 404 {
			t.Fatalf("revoked link %s: %d %s", p, r.Status, r.Body)
		}
	}
	if r := st.Do(t, "DELETE", "/v1/links/"+ls[0].ID, key, nil); r.Status != 204 {
		t.Fatalf("second delete is idempotent: %d", r.Status)
	}
	missing := "01900000-0000-7000-8000-000000000000"
	br := st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"ids": []string{ls[1].ID, ls[2].ID, missing}})
	var out struct {
		Revoked  []string `json:"revoked"`
		NotFound []string `json:"not_found"`
	}
	br.JSON(t, &out)
	if br.Status != 200 || len(out.Revoked) != 2 || len(out.NotFound) != 1 || out.NotFound[0] != missing {
		t.Fatalf("bulk revoke: %d %s", br.Status, br.Body)
	}
	for _, l := range ls[1:] {
		if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]any{}); r.Status != 404 {
			t.Fatalf("revoked verify: %d", r.Status)
		}
	}
}

func TestOwnersAreIsolated(t *testing.T) {
	t.Parallel()
	st, alice := newStack(t)
	bob := st.OwnerKey(t, "bob-"+t.Name())
	l := create(t, st, alice, spec(func(s map[string]any) {
		s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "jane@example.com"}}
	}))[0]
	checks := []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/links/" + l.ID, nil},
		{"DELETE", "/v1/links/" + l.ID, nil},
		{"GET", "/v1/links/" + l.ID + "/notifications", nil},
		{"POST", "/v1/links/send", map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"x@example.com"}}},
	}
	for _, c := range checks {
		r := st.Do(t, c.method, c.path, bob, c.body)
		if r.Status != 404 {
			t.Errorf("bob %s %s: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	br := st.Do(t, "POST", "/v1/links/revoke", bob, map[string]any{"ids": []string{l.ID}})
	if !strings.Contains(string(br.Body), `"revoked":[]`) {
		t.Errorf("bob bulk revoke: %s", br.Body)
	}
	var list struct{ Count int }
	st.Do(t, "GET", "/v1/links", bob, nil).JSON(t, &list)
	if list.Count != 0 {
		t.Errorf("bob sees %d links", list.Count)
	}
	var still linkResp
	st.Do(t, "GET", "/v1/links/"+l.ID, alice, nil).JSON(t, &still)
	if still.Status != "active" || still.Authenticator.AuthContext != "j***@example.com" {
		t.Errorf("alice's link after bob's attempts: %+v", still)
	}
	if r := st.Do(t, "GET", "/v1/links", "slk_notakey", nil); r.Status != 401 {
		t.Errorf("bad key: %d", r.Status)
	}
	if r := st.Do(t, "GET", "/v1/links", "", nil); r.Status != 401 {
		t.Errorf("no key: %d", r.Status)
	}
}

func countLinks(t *testing.T, st *testkit.Stack, key string) int {
	var list struct{ Count int }
	st.Do(t, "GET", "/v1/links", key, nil).JSON(t, &list)
	return list.Count
}

func TestBadInputIsA4xxAndWritesNothing(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	many := make([]map[string]any, 101)
	for i := range many {
		many[i] = spec()
	}
	huge := `{"links":[{"title":"` + strings.Repeat("x", 2<<20) + `"}]}`
	cases := []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"bad json", `{"links":[`, 400, "invalid_json", ""},
		{"not json", `hello`, 400, "invalid_json", ""},
		{"unknown top field", `{"links":[],"extra":1}`, 400, "unknown_field", "extra"},
		// encoding/json alone would take the last of two keys and match keys in
		// any case: another parser in front of us could read a different body.
		{"key given twice", `{"links":[{"title":"a","title":"b"}]}`, 400, "duplicate_field", "title"},
		{"key in other case", `{"Links":[]}`, 400, "unknown_field", "Links"},
		{"key with a Kelvin sign", `{"lin\u212as":[]}`, 400, "unknown_field", "lin\u212as"},
		{"unknown spec field", map[string]any{"links": []any{spec(func(s map[string]any) { s["colour"] = "red" })}}, 400, "unknown_field", "colour"},
		{"2 MiB body", huge, 413, "body_too_large", ""},
		{"past expiry", map[string]any{"links": []any{spec(func(s map[string]any) { s["expires_at"] = "2020-01-01T00:00:00Z" })}}, 400, "invalid_expires_at", "links[0].expires_at"},
		{"expiry too far", map[string]any{"links": []any{spec(func(s map[string]any) { s["expires_at"] = future(400 * 24 * time.Hour) })}}, 400, "invalid_expires_at", "links[0].expires_at"},
		{"not rfc3339", map[string]any{"links": []any{spec(func(s map[string]any) { s["expires_at"] = "tomorrow" })}}, 400, "invalid_time", ""},
		{"bad email", map[string]any{"links": []any{spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "Jane <jane@example.com>"}}
		})}}, 400, "invalid_email", "links[0].authenticators[0].auth_context"},
		{"email with CRLF", map[string]any{"links": []any{spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "jane@example.com\r\nBcc: x@y.z"}}
		})}}, 400, "invalid_email", "links[0].authenticators[0].auth_context"},
		{"bad phone", map[string]any{"links": []any{spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "sms_otp", "auth_context": "+1 555"}}
		})}}, 400, "invalid_phone", "links[0].authenticators[0].auth_context"},
		{"short password", map[string]any{"links": []any{spec(withPassword("short"))}}, 400, "invalid_password", "links[0].authenticators[0].auth_context"},
		{"101 specs", map[string]any{"links": many}, 400, "invalid_links", "links"},
		{"no specs", map[string]any{"links": []any{}}, 400, "invalid_links", "links"},
		{"upload on a file", map[string]any{"links": []any{spec(func(s map[string]any) { s["link_type"] = "upload" })}}, 400, "invalid_link_type", "links[0].link_type"},
		{"max_access_count 0", map[string]any{"links": []any{spec(func(s map[string]any) { s["max_access_count"] = 0 })}}, 400, "invalid_max_access_count", "links[0].max_access_count"},
		{"wrong type", map[string]any{"links": []any{spec(func(s map[string]any) { s["max_access_count"] = "three" })}}, 400, "invalid_json", "links.max_access_count"},
		{"bad target url", map[string]any{"links": []any{spec(func(s map[string]any) {
			s["targets"] = []any{map[string]any{"id": "a", "type": "file", "url": "javascript:alert(1)"}}
		})}}, 400, "invalid_target", "links[0].targets[0].url"},
		// One bad spec among good ones: nothing at all is written.
		{"one bad of two", map[string]any{"links": []any{spec(), spec(func(s map[string]any) { s["link_type"] = "admin" })}}, 400, "invalid_link_type", "links[1].link_type"},
	}
	for _, c := range cases {
		r := st.Do(t, "POST", "/v1/links", key, c.body)
		if r.Status != c.status || r.ErrorCode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, truncate(r.Body), c.status, c.code)
			continue
		}
		var e struct {
			Error struct{ Message, Field string } `json:"error"`
		}
		r.JSON(t, &e)
		if e.Error.Message == "" || e.Error.Field != c.field {
			t.Errorf("%s: message %q field %q, want field %q", c.name, e.Error.Message, e.Error.Field, c.field)
		}
	}
	r := st.Do(t, "POST", "/v1/links", key, nil, "Content-Type", "text/plain")
	if r.Status != 415 && r.Status != 400 {
		t.Errorf("no body: %d", r.Status)
	}
	if n := countLinks(t, st, key); n != 0 {
		t.Fatalf("bad requests wrote %d links", n)
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func TestOneLinkPerAuthenticatorWithMaskedContext(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	ls := create(t, st, key, spec(func(s map[string]any) {
		s["authenticators"] = []any{
			map[string]any{"auth_type": "password", "auth_context": "long enough secret"},
			map[string]any{"auth_type": "email_otp", "auth_context": "john@Example.COM"},
			map[string]any{"auth_type": "sms_otp", "auth_context": "+1 (415) 555-4567"},
		}
		s["title"] = "Q3 report"
		s["notify"] = true
	}))
	if len(ls) != 3 {
		t.Fatalf("%d links", len(ls))
	}
	want := []string{"", "j***@example.com", "+1******4567"}
	for i, l := range ls {
		if l.Authenticator.AuthContext != want[i] {
			t.Errorf("link %d context %q, want %q", i, l.Authenticator.AuthContext, want[i])
		}
	}
	// notify queued one notification per OTP recipient, none for the password link.
	for i, l := range ls {
		var out struct {
			Notifications []struct{ Status, Channel, Recipient string }
		}
		st.Do(t, "GET", "/v1/links/"+l.ID+"/notifications", key, nil).JSON(t, &out)
		wantN := map[int]int{0: 0, 1: 1, 2: 1}[i]
		if len(out.Notifications) != wantN {
			t.Fatalf("link %d: %d notifications", i, len(out.Notifications))
		}
		if wantN == 1 && (out.Notifications[0].Status != "queued" || out.Notifications[0].Recipient != want[i]) {
			t.Errorf("link %d notification %+v", i, out.Notifications[0])
		}
	}
	byRecipient := st.Do(t, "GET", "/v1/links?recipient="+url.QueryEscape("+14155554567"), key, nil)
	var page struct {
		Links []linkResp
		Count int
	}
	byRecipient.JSON(t, &page)
	if page.Count != 1 || page.Links[0].ID != ls[2].ID {
		t.Fatalf("recipient filter: %s", byRecipient.Body)
	}
}

func TestSendQueuesNotifications(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec(withPassword("long enough secret")))[0]
	r := st.Do(t, "POST", "/v1/links/send", key, map[string]any{
		"link_ids": []string{l.ID}, "recipients": []string{"ann@example.com", "+442071838750"}, "message": "see this",
	})
	var out struct {
		Notifications []struct{ ID, LinkID, Recipient, Status string }
	}
	r.JSON(t, &out)
	if r.Status != 202 || len(out.Notifications) != 2 {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	if out.Notifications[0].Recipient != "a***@example.com" || out.Notifications[1].Recipient != "+44******8750" {
		t.Errorf("masked: %+v", out.Notifications)
	}
	n := st.Do(t, "GET", "/v1/notifications/"+out.Notifications[0].ID, key, nil)
	if n.Status != 200 || !strings.Contains(string(n.Body), `"status":"queued"`) {
		t.Fatalf("notification: %d %s", n.Status, n.Body)
	}
	bad := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"not an email"}})
	if bad.Status != 400 || bad.ErrorCode() != "invalid_recipient" {
		t.Fatalf("bad recipient: %d %s", bad.Status, bad.Body)
	}
}

func TestPasswordLockoutAfterFiveWrongTries(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec(withPassword("correct horse battery")))[0]
	for i := range 5 {
		if r, _ := verify(t, st, l, map[string]string{"password": fmt.Sprintf("wrong-%d-guess", i)}); r.Status != 401 {
			t.Fatalf("try %d: %d %s", i, r.Status, r.Body)
		}
	}
	r, _ := verify(t, st, l, map[string]string{"password": "correct horse battery"})
	if r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after 5 wrong tries: %d %s (Retry-After %q)", r.Status, r.Body, r.Header.Get("Retry-After"))
	}
	if ra := r.Header.Get("Retry-After"); ra != "900" && ra != "899" {
		t.Errorf("Retry-After %s, want about 900", ra)
	}
	// The lock ends: simulate the 15 minutes passing.
	if _, err := st.Pool.Exec(context.Background(), `UPDATE links SET locked_until = now() - interval '1 second' WHERE id = $1`, l.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := verify(t, st, l, map[string]string{"password": "correct horse battery"}); r.Status != 200 {
		t.Fatalf("after lock: %d %s", r.Status, r.Body)
	}
}

func TestOpenLinkRedirectStyleCountsEachOpen(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec(func(s map[string]any) {
		s["max_access_count"] = 2
		s["targets"] = []any{
			map[string]any{"id": "a", "type": "file", "url": "https://storage.example.com/a"},
			map[string]any{"id": "b", "type": "folder", "name": "B"},
		}
	}))[0]
	if r := st.Do(t, "GET", l.path()+"/open", "", nil); r.Status != 400 || r.ErrorCode() != "target_required" {
		t.Fatalf("no target on multi-target link: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "GET", l.path()+"/open?target=a", "", nil); r.Status != 302 {
		t.Fatalf("open a: %d %s", r.Status, r.Body)
	}
	r := st.Do(t, "GET", l.path()+"/open?target=b", "", nil)
	var g struct {
		Grant  string
		Target struct{ ID string }
	}
	r.JSON(t, &g)
	if r.Status != 200 || g.Grant == "" || g.Target.ID != "b" {
		t.Fatalf("open b (no url): %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "GET", l.path()+"/open?target=a", "", nil); r.Status != 404 {
		t.Fatalf("third open of a 2-access link: %d", r.Status)
	}
	pw := create(t, st, key, spec(withPassword("long enough secret")))[0]
	if r := st.Do(t, "GET", pw.path()+"/open", "", nil); r.Status != 401 {
		t.Fatalf("password link without session: %d", r.Status)
	}
}

func TestUnknownExpiredExhaustedRevokedAreIdentical(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	ls := create(t, st, key, spec(), spec(func(s map[string]any) { s["max_access_count"] = 1 }), spec())
	if _, err := st.Pool.Exec(context.Background(), `UPDATE links SET expires_at = now() - interval '1 second' WHERE id = $1`, ls[0].ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := verify(t, st, ls[1], map[string]any{}); r.Status != 200 {
		t.Fatal(r.Status)
	}
	st.Do(t, "DELETE", "/v1/links/"+ls[2].ID, key, nil)
	paths := []string{"/s/unknownunknownunknownunknown0", ls[0].path(), ls[1].path(), ls[2].path()}
	var bodies []string
	for _, p := range paths {
		r := st.Do(t, "GET", p, "", nil)
		if r.Status != 404 {
			t.Fatalf("%s: %d", p, r.Status)
		}
		bodies = append(bodies, string(r.Body))
	}
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Fatalf("bodies differ: %q vs %q", b, bodies[0])
		}
	}
	if !strings.Contains(bodies[0], `"code":"link_not_found","message":"link not found or has expired"`) {
		t.Fatalf("body %s", bodies[0])
	}
	// The owner sees the expired link as expired even before the reaper runs.
	var got linkResp
	st.Do(t, "GET", "/v1/links/"+ls[0].ID, key, nil).JSON(t, &got)
	if got.Status != "expired" {
		t.Fatalf("status %s", got.Status)
	}
}

// A code verify reads the link and its newest challenge together; before
// any code was requested there is none, and an unknown link stays 404.
func TestCodeVerifyBeforeAnyCodeWasRequested(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec(func(s map[string]any) {
		s["authenticators"] = []any{map[string]any{"auth_type": "sms_otp", "auth_context": "+14155550123"}}
	}))[0]
	if r, _ := verify(t, st, l, map[string]string{"code": "123456"}); r.Status != 401 || r.ErrorCode() != "no_code" {
		t.Fatalf("code before any request: %d %s", r.Status, r.Body)
	}
	if r, _ := verify(t, st, l, map[string]string{"code": "12x456"}); r.Status != 400 || r.ErrorCode() != "invalid_code_format" {
		t.Fatalf("malformed code: %d %s", r.Status, r.Body)
	}
	gone := linkResp{URL: l.URL[:strings.LastIndex(l.URL, "/")+1] + "slt_nosuchtoken"}
	if r, _ := verify(t, st, gone, map[string]string{"code": "123456"}); r.Status != 404 {
		t.Fatalf("code for an unknown link: %d %s", r.Status, r.Body)
	}
}

// Counting an access must stay a HOT update (no indexed column changes),
// or every verify writes an entry into each of the links indexes: that
// was a quarter of a verify's cost across a million links.
func TestCountingAnAccessIsAHOTUpdate(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	ls := create(t, st, key, spec(), spec(func(s map[string]any) { s["max_access_count"] = 5 }))
	for _, l := range ls {
		for range 2 {
			if r, _ := verify(t, st, l, map[string]any{}); r.Status != 200 {
				t.Fatalf("verify: %d %s", r.Status, r.Body)
			}
		}
	}
	// Backends report table statistics within a second or so of going idle.
	var upd, hot int64
	testkit.Eventually(t, 20*time.Second, func() bool {
		err := st.Pool.QueryRow(context.Background(),
			`SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'links'`).Scan(&upd, &hot)
		if err != nil {
			t.Fatal(err)
		}
		return upd >= 4
	}, "4 access counts in the statistics")
	if hot != upd {
		t.Fatalf("%d of %d link updates were HOT; counting an access must change no indexed column", hot, upd)
	}
}

func TestSMSRegionsBoundWhereTextsGo(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "", func(c *link.Config) { c.Policy.SMSRegions = []string{"US", "CA"} })
	key := st.OwnerKey(t, "owner-"+t.Name())
	sms := func(phone string) map[string]any {
		return spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "sms_otp", "auth_context": phone}}
		})
	}
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{sms("+14155550123"), sms("+33142685300")}})
	if r.Status != 400 || r.ErrorCode() != "sms_region_not_allowed" || !strings.Contains(string(r.Body), `"field":"links[1].authenticators[0].auth_context"`) ||
		!strings.Contains(string(r.Body), "region FR") {
		t.Fatalf("a French number: %d %s", r.Status, r.Body)
	}
	if n := countLinks(t, st, key); n != 0 {
		t.Fatalf("the refused request wrote %d links", n)
	}
	l := create(t, st, key, sms("+1 613 555 0123"))[0] // Ottawa
	r = st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"+442079460958"}})
	if r.Status != 400 || r.ErrorCode() != "sms_region_not_allowed" {
		t.Fatalf("send to a British number: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"+14155550123", "a@example.com"}}); r.Status != 202 {
		t.Fatalf("send within the regions: %d %s", r.Status, r.Body)
	}
}

func TestAnOwnerQueuesAtMostNotifyPerHour(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "", func(c *link.Config) { c.NotifyPerHour = 3 })
	key := st.OwnerKey(t, "owner-"+t.Name())
	other := st.OwnerKey(t, "other-"+t.Name())
	notify := func(addr string) map[string]any {
		return spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": addr}}
			s["notify"] = true
		})
	}
	l := create(t, st, key, notify("a@example.com"), notify("b@example.com"))[0]
	queued := func() (n int) {
		if err := st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM notifications`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Two more would make four: refused whole, with when to come back.
	r := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"c@example.com", "d@example.com"}})
	if r.Status != 429 || r.ErrorCode() != "notification_limit" {
		t.Fatalf("over the limit: %d %s", r.Status, r.Body)
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 3590 || ra > 3600 {
		t.Errorf("Retry-After %q, want about an hour (the oldest leaves the window)", r.Header.Get("Retry-After"))
	}
	if r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{notify("e@example.com"), notify("f@example.com")}}); r.Status != 429 {
		t.Fatalf("create over the limit: %d %s", r.Status, r.Body)
	}
	if n := queued(); n != 2 || countLinks(t, st, key) != 1+1 {
		t.Fatalf("refused requests wrote: %d notifications, %d links", n, countLinks(t, st, key))
	}
	if r := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"c@example.com"}}); r.Status != 202 {
		t.Fatalf("the third: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{spec()}}); r.Status != 201 {
		t.Fatalf("a link that notifies no one is not limited: %d %s", r.Status, r.Body)
	}
	// The limit is the owner's: another owner is not held back.
	o := create(t, st, other, notify("g@example.com"))[0]
	// A request that could never pass says so, not "try later".
	many := []string{"h@example.com", "i@example.com", "j@example.com", "k@example.com"}
	if r := st.Do(t, "POST", "/v1/links/send", other, map[string]any{"link_ids": []string{o.ID}, "recipients": many}); r.Status != 400 || r.ErrorCode() != "notification_limit" {
		t.Fatalf("four at once: %d %s", r.Status, r.Body)
	}
}

func TestRevokeEveryLinkOfATarget(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	other := st.OwnerKey(t, "other-"+t.Name())
	to := func(target string) map[string]any {
		return spec(func(s map[string]any) {
			s["targets"] = []any{map[string]any{"id": target, "type": "file", "url": "https://storage.example.com/" + target}}
		})
	}
	both := spec(func(s map[string]any) {
		s["targets"] = []any{
			map[string]any{"id": "a.pdf", "type": "file", "url": "https://storage.example.com/a.pdf"},
			map[string]any{"id": "b.pdf", "type": "file", "url": "https://storage.example.com/b.pdf"},
		}
	})
	ls := create(t, st, key, to("a.pdf"), to("a.pdf"), both, to("b.pdf"))
	theirs := create(t, st, other, to("a.pdf"))[0]
	// One of them has a recipient's session open: revoking ends it.
	_, access := verify(t, st, ls[0], map[string]any{})
	if access == "" {
		t.Fatal("no access token")
	}
	r := st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"target_id": "a.pdf"})
	var out struct{ Revoked, NotFound []string }
	if r.Status != 200 {
		t.Fatalf("revoke a.pdf: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &out)
	want := []string{ls[0].ID, ls[1].ID, ls[2].ID}
	slices.Sort(want)
	slices.Sort(out.Revoked)
	if !slices.Equal(out.Revoked, want) || len(out.NotFound) != 0 {
		t.Fatalf("revoked %v, want %v", out.Revoked, want)
	}
	status := func(key, id string) string {
		var l linkResp
		st.Do(t, "GET", "/v1/links/"+id, key, nil).JSON(t, &l)
		return l.Status
	}
	if s := status(key, ls[3].ID); s != "active" {
		t.Errorf("the b.pdf link is %s", s)
	}
	if s := status(other, theirs.ID); s != "active" {
		t.Errorf("another owner's a.pdf link is %s", s)
	}
	if r := st.Do(t, "GET", ls[0].path()+"/open", access, nil); r.Status != 404 {
		t.Errorf("open after the target was revoked: %d %s", r.Status, r.Body)
	}
	if n := st.Count(t, `SELECT count(*) FROM audit_events WHERE type = 'link.revoked'`); n != 3 {
		t.Errorf("%d link.revoked events, want 3", n)
	}
	// Again: nothing left to revoke, and nothing written.
	r = st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"target_id": "a.pdf"})
	if r.Status != 200 || !strings.Contains(string(r.Body), `"revoked":[]`) {
		t.Errorf("second revoke: %d %s", r.Status, r.Body)
	}
	for name, body := range map[string]any{
		"both":          map[string]any{"ids": []string{ls[3].ID}, "target_id": "b.pdf"},
		"empty target":  map[string]any{"target_id": ""},
		"NUL in target": `{"target_id":"b\u0000"}`,
	} {
		if r := st.Do(t, "POST", "/v1/links/revoke", key, body); r.Status != 400 {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	if s := status(key, ls[3].ID); s != "active" {
		t.Errorf("the refused requests revoked the b.pdf link: %s", s)
	}
}
