package delivery_test

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

type otpPolicy struct {
	CodeLength  int `json:"code_length"`
	CodeTTL     int `json:"code_ttl"`
	MaxAttempts int `json:"max_attempts"`
	ResendAfter int `json:"resend_after"`
}

func linkPolicy(t *testing.T, st *testkit.Stack, key, id string) *otpPolicy {
	t.Helper()
	var v struct {
		OTPPolicy *otpPolicy `json:"otp_policy"`
	}
	st.Do(t, "GET", "/v1/links/"+id, key, nil).JSON(t, &v)
	return v.OTPPolicy
}

// A link's own OTP policy is what its codes are: the length the notifier
// makes and the page asks for, the lifetime the challenge gets and the
// text states, the attempts before the code locks, the wait before
// another code. The owner and the recipient both read it back; a change
// ends the codes out under the old terms.
func TestOTPPolicyOfALinkGovernsItsCodes(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{twilio: tw})
	ctx := context.Background()

	auth := smsOTP("+14155550142")
	want := otpPolicy{CodeLength: 8, CodeTTL: 120, MaxAttempts: 2, ResendAfter: 45}
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{map[string]any{
		"targets":        []any{map[string]any{"id": "plan.pdf", "type": "file"}},
		"link_type":      "view",
		"expires_at":     future(),
		"authenticators": []any{auth},
		"otp_policy":     map[string]any{"code_length": 8, "code_ttl": 120, "max_attempts": 2, "resend_after": 45},
	}}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var made struct{ Links []created }
	r.JSON(t, &made)
	l := made.Links[0]
	if got := linkPolicy(t, st, key, l.ID); got == nil || *got != want {
		t.Fatalf("owner sees policy %+v, want %+v", got, want)
	}
	var landing struct {
		OTPPolicy *otpPolicy `json:"otp_policy"`
	}
	st.Do(t, "GET", l.path(), "", nil, "Accept", "application/json").JSON(t, &landing)
	if landing.OTPPolicy == nil || *landing.OTPPolicy != want {
		t.Fatalf("recipient sees policy %+v, want %+v", landing.OTPPolicy, want)
	}

	// The code: 8 digits, said to last 2 minutes, a challenge of 120 s.
	r = st.Do(t, "POST", l.path()+"/otp", "", nil)
	if r.Status != 202 || !strings.Contains(string(r.Body), `"resend_after":45`) {
		t.Fatalf("otp: %d %s", r.Status, r.Body)
	}
	msg := tw.WaitMessages(t, 1, 10*time.Second)[0].Body
	code := regexp.MustCompile(`\b\d{8}\b`).FindString(msg)
	if code == "" || regexp.MustCompile(`\b\d{6}\b`).MatchString(strings.ReplaceAll(msg, code, "")) {
		t.Fatalf("SMS does not carry one 8-digit code: %q", msg)
	}
	if !strings.Contains(msg, "2 minutes") {
		t.Fatalf("SMS does not say the code lasts 2 minutes: %q", msg)
	}
	var life float64
	var length, attempts int
	if err := st.Pool.QueryRow(ctx, `SELECT extract(epoch FROM expires_at - created_at), code_length, max_attempts
		FROM otp_challenges WHERE link_id = $1`, l.ID).Scan(&life, &length, &attempts); err != nil {
		t.Fatal(err)
	}
	if life < 119 || life > 121 || length != 8 || attempts != 2 {
		t.Fatalf("challenge lives %.1f s with %d digits and %d attempts; want 120 s, 8, 2", life, length, attempts)
	}

	// Another code at once waits the link's 45 s, not the default 30 s.
	r = st.Do(t, "POST", l.path()+"/otp", "", nil)
	wait, _ := strconv.Atoi(r.Header.Get("Retry-After"))
	if r.Status != 429 || wait < 40 || wait > 45 {
		t.Fatalf("second code at once: %d, Retry-After %q; want 429 and ~45 s", r.Status, r.Header.Get("Retry-After"))
	}

	// A code of the default length is a slip, not a guess: refused
	// uncharged, saying how long the code is.
	r = st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code[:6]})
	if r.Status != 400 || r.ErrorCode() != "invalid_code_format" || !strings.Contains(string(r.Body), "8 digits") {
		t.Fatalf("6 digits for an 8-digit code: %d %s", r.Status, r.Body)
	}
	if n := st.Count(t, `SELECT wrong_codes FROM otp_challenges WHERE link_id = $1`, l.ID); n != 0 {
		t.Fatalf("a code of the wrong length was charged: wrong_codes %d", n)
	}
	// Two wrong codes lock it, not five.
	wrong := wrongCode(code[:6], 0) + code[6:]
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrong}); r.ErrorCode() != "invalid_code" ||
		!strings.Contains(string(r.Body), "the code is wrong; 1 attempt left") {
		t.Fatalf("first wrong code: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrong}); r.ErrorCode() != "code_locked" {
		t.Fatalf("second wrong code: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.ErrorCode() != "code_locked" {
		t.Fatalf("the right code after the lock: %d %s", r.Status, r.Body)
	}

	// The owner changes the policy: the link's own fields go, the
	// defaults apply, and a code out under the old terms stops working.
	if _, err := st.Pool.Exec(ctx, `UPDATE otp_challenges SET created_at = created_at - interval '1 minute'
		WHERE link_id = $1`, l.ID); err != nil { // past the 45 s wait, without sleeping through it
		t.Fatal(err)
	}
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatalf("a new code: %d %s", r.Status, r.Body)
	}
	second := regexp.MustCompile(`\b\d{8}\b`).FindString(tw.WaitMessages(t, 2, 10*time.Second)[1].Body)
	waitCodeSent(t, st, l.ID)
	r = st.Do(t, "PATCH", "/v1/links/"+l.ID, key, map[string]any{"otp_policy": map[string]any{"code_length": 6}})
	if r.Status != 200 {
		t.Fatalf("patch: %d %s", r.Status, r.Body)
	}
	d := link.DefaultOTPLimits.Policy()
	d.CodeLength = 6
	if got := linkPolicy(t, st, key, l.ID); got == nil || *got != (otpPolicy{d.CodeLength, d.CodeTTL, d.MaxAttempts, d.ResendAfter}) {
		t.Fatalf("after the change: %+v, want the defaults with 6 digits %+v", got, d)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": second}); r.ErrorCode() != "code_expired" {
		t.Fatalf("a code sent before the change: %d %s", r.Status, r.Body)
	}
	var changed []string
	if err := st.Pool.QueryRow(ctx, `SELECT array(SELECT jsonb_array_elements_text(data->'changed')) FROM audit_events
		WHERE link_id = $1 AND type = 'link.updated'`, l.ID).Scan(&changed); err != nil || !slices.Contains(changed, "otp_policy") {
		t.Fatalf("link.updated names %v (%v), want otp_policy", changed, err)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE otp_challenges SET created_at = created_at - interval '1 minute'
		WHERE link_id = $1`, l.ID); err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 || !strings.Contains(string(r.Body), `"resend_after":30`) {
		t.Fatalf("a code under the new policy: %d %s", r.Status, r.Body)
	}
	third := codeRe.FindStringSubmatch(tw.WaitMessages(t, 3, 10*time.Second)[2].Body)
	if third == nil {
		t.Fatal("no 6-digit code under the new policy")
	}
	waitCodeSent(t, st, l.ID)
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": third[1]}); r.Status != 200 {
		t.Fatalf("the 6-digit code under the new policy: %d %s", r.Status, r.Body)
	}

	// A link that set nothing follows the operator's defaults.
	plain := createLink(t, st, key, smsOTP("+14155550143"), false)
	if got := linkPolicy(t, st, key, plain.ID); got == nil || *got != (otpPolicy{6, 600, 5, 30}) {
		t.Fatalf("a link without a policy: %+v", got)
	}
	st.ValidateEvents(t)
}

// A policy is checked field by field against its bounds, only where codes
// are used, and strictly (no unknown fields, no zero meaning "default").
func TestOTPPolicyIsChecked(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "", func(c *link.Config) {
		c.OTP = link.OTPLimits{CodeLength: 8, TTL: 5 * time.Minute}
	})
	key := st.OwnerKey(t, "o")
	mk := func(auth map[string]any, policy any) testkit.Response {
		s := map[string]any{
			"targets":    []any{map[string]any{"id": "a", "type": "file"}},
			"link_type":  "view",
			"expires_at": future(),
			"otp_policy": policy,
		}
		if auth != nil {
			s["authenticators"] = []any{auth}
		}
		return st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{s}})
	}
	for _, c := range []struct {
		auth   map[string]any
		policy any
		code   string
		field  string
	}{
		{emailOTP("a@example.com"), map[string]any{"code_length": 5}, "invalid_otp_policy", "links[0].otp_policy.code_length"},
		{emailOTP("a@example.com"), map[string]any{"code_length": 11}, "invalid_otp_policy", "links[0].otp_policy.code_length"},
		{emailOTP("a@example.com"), map[string]any{"code_ttl": 601}, "invalid_otp_policy", "links[0].otp_policy.code_ttl"},
		{emailOTP("a@example.com"), map[string]any{"max_attempts": 0}, "invalid_otp_policy", "links[0].otp_policy.max_attempts"},
		{emailOTP("a@example.com"), map[string]any{"resend_after": 5}, "invalid_otp_policy", "links[0].otp_policy.resend_after"},
		{emailOTP("a@example.com"), map[string]any{"digits": 8}, "unknown_field", ""},
		{emailOTP("a@example.com"), map[string]any{"code_length": "8"}, "invalid_json", ""},
		{map[string]any{"auth_type": "password", "auth_context": "correct horse"}, map[string]any{"code_length": 8}, "otp_policy_not_applicable", "links[0].otp_policy"},
		{nil, map[string]any{}, "otp_policy_not_applicable", "links[0].otp_policy"},
	} {
		r := mk(c.auth, c.policy)
		var e struct {
			Error struct{ Code, Field string }
		}
		r.JSON(t, &e)
		if r.Status != 400 || e.Error.Code != c.code || (c.field != "" && e.Error.Field != c.field) {
			t.Errorf("policy %v on %v: %d %s; want 400 %s at %q", c.policy, c.auth, r.Status, r.Body, c.code, c.field)
		}
	}
	if n := st.Count(t, `SELECT count(*) FROM links`); n != 0 {
		t.Fatalf("%d links made by refused requests", n)
	}

	// The operator's defaults show on a link that set nothing, and a
	// link's own field overrides only itself.
	r := mk(emailOTP("b@example.com"), map[string]any{"max_attempts": 3})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var made struct{ Links []created }
	r.JSON(t, &made)
	if got := linkPolicy(t, st, key, made.Links[0].ID); got == nil || *got != (otpPolicy{8, 300, 3, 30}) {
		t.Fatalf("policy %+v, want the operator's 8 digits and 300 s with the link's 3 attempts", got)
	}
	pw := mk(map[string]any{"auth_type": "password", "auth_context": "correct horse"}, nil)
	var pwMade struct{ Links []created }
	pw.JSON(t, &pwMade)
	if got := linkPolicy(t, st, key, pwMade.Links[0].ID); got != nil {
		t.Fatalf("a password link shows an OTP policy: %+v", got)
	}
	if r := st.Do(t, "PATCH", "/v1/links/"+pwMade.Links[0].ID, key, map[string]any{"otp_policy": map[string]any{"code_length": 8}}); r.Status != 409 ||
		r.ErrorCode() != "otp_policy_not_applicable" {
		t.Fatalf("policy on a password link: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "PATCH", "/v1/links/"+made.Links[0].ID, key, map[string]any{"otp_policy": map[string]any{"max_attempts": 11}}); r.Status != 400 ||
		r.ErrorCode() != "invalid_otp_policy" {
		t.Fatalf("patch out of bounds: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "PATCH", "/v1/links/"+made.Links[0].ID, key, map[string]any{"otp_policy": nil}); r.Status != 200 {
		t.Fatalf("patch to the defaults: %d %s", r.Status, r.Body)
	}
	if got := linkPolicy(t, st, key, made.Links[0].ID); got == nil || *got != (otpPolicy{8, 300, 5, 30}) {
		t.Fatalf("after null: %+v, want the operator's defaults", got)
	}
	var stored *string
	if err := st.Pool.QueryRow(context.Background(), `SELECT otp_policy::text FROM links WHERE id = $1`, made.Links[0].ID).Scan(&stored); err != nil || stored != nil {
		t.Fatalf("after null the link stores %v (%v), want nothing (so defaults changed later reach it)", stored, err)
	}
}

// A link's attempt limit holds under parallel guesses as the default does
// (TestParallelWrongCodesCannotOutrunTheLimit): each attempt re-checks the
// challenge's own limit under its row lock.
func TestParallelWrongCodesCannotOutrunALinksLimit(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{twilio: tw})
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{map[string]any{
		"targets": []any{map[string]any{"id": "a", "type": "file"}}, "link_type": "view", "expires_at": future(),
		"authenticators": []any{smsOTP("+14155550144")}, "otp_policy": map[string]any{"max_attempts": 2},
	}}})
	var made struct{ Links []created }
	r.JSON(t, &made)
	l := made.Links[0]
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatalf("otp: %d %s", r.Status, r.Body)
	}
	code := codeRe.FindStringSubmatch(tw.WaitMessages(t, 1, 10*time.Second)[0].Body)[1]
	waitCodeSent(t, st, l.ID)
	const guesses = 20
	counts := guessAtOnce(t, st, l, code, guesses)
	if counts["invalid_code"] != 1 || counts["code_locked"] != guesses-1 {
		t.Fatalf("%d parallel wrong codes against a limit of 2: %v", guesses, counts)
	}
	if n := st.Count(t, `SELECT wrong_codes FROM otp_challenges`); n != 2 {
		t.Fatalf("wrong_codes %d, want 2", n)
	}
}
