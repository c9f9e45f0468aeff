package web_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
	"github.com/sharelinks/sharelinks/internal/web"
)

// These tests drive the pages as a browser without JavaScript would: plain
// GETs and form posts, cookies kept, each redirect checked.

func mustContain(t *testing.T, p page, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(p.Body, w) {
			t.Fatalf("page (%d) lacks %q:\n%s", p.Status, w, p.Body)
		}
	}
}

func mustNotContain(t *testing.T, p page, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(p.Body, b) {
			t.Fatalf("page (%d) shows %q:\n%s", p.Status, b, p.Body)
		}
	}
}

var (
	scriptTag   = regexp.MustCompile(`<script\b[^>]*>`)
	inlineStyle = regexp.MustCompile(`(?i)<style\b|\sstyle=`)
	inlineEvent = regexp.MustCompile(`(?i)\son[a-z]+=`)
)

// checkPageHeaders asserts the headers and markup rules of every page.
func checkPageHeaders(t *testing.T, name string, p page) {
	t.Helper()
	csp := p.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "form-action 'self'",
		"frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: CSP %q lacks %q", name, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("%s: CSP allows unsafe sources: %q", name, csp)
	}
	for h, want := range map[string]string{
		"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := p.Header.Get(h); got != want {
			t.Errorf("%s: %s = %q, want %q", name, h, got, want)
		}
	}
	if p.Status >= 300 && p.Status < 400 {
		return
	}
	if ct := p.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("%s: Content-Type %q", name, ct)
	}
	for _, tag := range scriptTag.FindAllString(p.Body, -1) {
		if !strings.Contains(tag, ` src="/assets/`) {
			t.Errorf("%s: inline or foreign script %s", name, tag)
		}
	}
	if m := inlineStyle.FindString(p.Body); m != "" {
		t.Errorf("%s: inline style %q", name, m)
	}
	if m := inlineEvent.FindString(p.Body); m != "" {
		t.Errorf("%s: inline event handler %q", name, m)
	}
}

func TestPasswordFlowWithoutJavaScript(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	l := e.create(t, linkSpec{auth: password("correct horse battery"), title: "Board pack <Q3>",
		message: "Hi Ann,\nhere are the <b>papers</b>.", linkType: "view"})
	c := e.client(t)

	land := c.get(l.Path)
	checkPageHeaders(t, "landing", land)
	if land.Status != http.StatusOK {
		t.Fatalf("landing %d", land.Status)
	}
	mustContain(t, land, "Board pack &lt;Q3&gt;", "Hi Ann,<br>here are the &lt;b&gt;papers&lt;/b&gt;.",
		"1 file", "View only", "in 3 days", `type="password"`, `action="`+l.Path+`/unlock"`, `name="csrf"`)
	mustNotContain(t, land, "Quarterly plan.pdf", "plan.pdf") // names only after verification

	wrong := c.post(l.Path+"/unlock", url.Values{"password": {"wrong password"}})
	checkPageHeaders(t, "wrong password redirect", wrong)
	if wrong.Status != http.StatusSeeOther || wrong.Location != l.Path+"?e=password" {
		t.Fatalf("wrong password: %d → %q", wrong.Status, wrong.Location)
	}
	again := c.follow(wrong)
	mustContain(t, again, "That password is not right.", `aria-invalid="true"`, "<title>Error: ")
	if c.cookie(l.Path, httpapi.AccessCookie) != "" {
		t.Fatal("access cookie after a wrong password")
	}

	ok := c.post(l.Path+"/unlock", url.Values{"password": {"correct horse battery"}})
	if ok.Status != http.StatusSeeOther || ok.Location != l.Path+"/files?open=1" {
		t.Fatalf("right password: %d → %q\n%s", ok.Status, ok.Location, ok.Body)
	}
	var access *http.Cookie
	for _, ck := range (&http.Response{Header: ok.Header}).Cookies() {
		if ck.Name == httpapi.AccessCookie {
			access = ck
		}
	}
	if access == nil || !access.HttpOnly || access.SameSite != http.SameSiteLaxMode || access.Path != l.Path ||
		access.Secure || access.MaxAge <= 0 {
		t.Fatalf("access cookie %+v", access)
	}

	opening := c.follow(ok)
	checkPageHeaders(t, "opening", opening)
	goURL := l.Path + "/go?target=plan.pdf"
	mustContain(t, opening, `<meta http-equiv="refresh" content="0;url=`+goURL+`">`, "Opening Quarterly plan.pdf")

	opened := c.get(goURL)
	if opened.Status != http.StatusFound || !strings.HasPrefix(opened.Location, e.storage.URL+"/files/plan.pdf?grant=") {
		t.Fatalf("open: %d → %q", opened.Status, opened.Location)
	}
	if opened.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatal("the redirect to storage must not leak the link URL as referrer")
	}

	// Coming back to the link later shows access instead of the form.
	back := c.get(l.Path)
	mustContain(t, back, "You have access", `href="`+goURL+`"`)
	mustNotContain(t, back, `type="password"`)
}

func TestCookiesSecureWhenPublicURLIsHTTPS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{publicBase: "https://share.example.com"})
	l := e.create(t, linkSpec{auth: password("correct horse battery")})
	c := e.client(t)
	land := c.get(l.Path)
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(land.Body)
	if csrf == nil {
		t.Fatal("no csrf field")
	}
	for _, ck := range (&http.Response{Header: land.Header}).Cookies() {
		if ck.Name == web.CSRFCookie && (!ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != l.Path) {
			t.Fatalf("csrf cookie %+v", ck)
		}
	}
	// The jar drops Secure cookies over http: send the token by hand.
	req, _ := http.NewRequest("POST", e.URL+l.Path+"/unlock",
		strings.NewReader(url.Values{"password": {"correct horse battery"}, "csrf": {csrf[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: web.CSRFCookie, Value: csrf[1]})
	ok := c.do(req)
	if ok.Status != http.StatusSeeOther {
		t.Fatalf("unlock %d %s", ok.Status, ok.Body)
	}
	found := false
	for _, ck := range (&http.Response{Header: ok.Header}).Cookies() {
		if ck.Name == httpapi.AccessCookie {
			found = true
			if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode {
				t.Fatalf("access cookie %+v", ck)
			}
		}
	}
	if !found {
		t.Fatal("no access cookie")
	}
}

func TestDeadLinksAllLookTheSame(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	c := e.client(t)

	expired := e.create(t, linkSpec{})
	e.expire(t, expired)
	revoked := e.create(t, linkSpec{})
	if r := e.st.Do(t, "DELETE", "/v1/links/"+revoked.ID, e.key, nil); r.Status >= 300 {
		t.Fatalf("revoke %d %s", r.Status, r.Body)
	}
	exhausted := e.create(t, linkSpec{maxUses: 1, targets: []target{{ID: "a", Type: "file"}, {ID: "b", Type: "file"}}})
	c.get(exhausted.Path)
	if r := c.post(exhausted.Path+"/unlock", url.Values{}); r.Status != http.StatusSeeOther {
		t.Fatalf("use the only access: %d → %q", r.Status, r.Location)
	}

	bodies := map[string]string{}
	for name, path := range map[string]string{
		"unknown": "/s/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "expired": expired.Path,
		"revoked": revoked.Path, "exhausted": exhausted.Path,
	} {
		p := e.client(t).get(path)
		checkPageHeaders(t, name, p)
		if p.Status != http.StatusNotFound {
			t.Fatalf("%s: status %d", name, p.Status)
		}
		mustContain(t, p, "This link is not available")
		bodies[name] = p.Body
		// The other pages of a dead link say the same.
		for _, sub := range []string{"/code", "/files", "/go"} {
			if q := e.client(t).get(path + sub); q.Status != http.StatusNotFound || q.Body != p.Body {
				t.Errorf("%s%s: %d, differs from the landing page", name, sub, q.Status)
			}
		}
	}
	for name, b := range bodies {
		if b != bodies["unknown"] {
			t.Errorf("the %s page differs from the unknown-link page", name)
		}
	}
}

func TestTooManyPasswordsLocksWithWaitTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	l := e.create(t, linkSpec{auth: password("correct horse battery")})
	c := e.client(t)
	c.get(l.Path)
	for i := range 5 {
		r := c.post(l.Path+"/unlock", url.Values{"password": {"nope nope"}})
		if r.Status != http.StatusSeeOther {
			t.Fatalf("attempt %d: %d", i, r.Status)
		}
	}
	p := c.get(l.Path)
	checkPageHeaders(t, "locked", p)
	if p.Status != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" {
		t.Fatalf("locked landing: %d Retry-After %q", p.Status, p.Header.Get("Retry-After"))
	}
	mustContain(t, p, "Too many attempts", "try again in 15 minutes")
	mustNotContain(t, p, `type="password"`)
	// Even the right password waits.
	r := c.post(l.Path+"/unlock", url.Values{"password": {"correct horse battery"}})
	if r.Status != http.StatusSeeOther || c.cookie(l.Path, httpapi.AccessCookie) != "" {
		t.Fatalf("right password while locked: %d, cookie %q", r.Status, c.cookie(l.Path, httpapi.AccessCookie))
	}
	mustContain(t, c.follow(r), "Too many attempts")
}

func TestCrossSiteFormsAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	l := e.create(t, linkSpec{auth: password("correct horse battery")})
	c := e.client(t)
	c.get(l.Path)
	good := url.Values{"password": {"correct horse battery"}}

	for name, hdr := range map[string][]string{
		"Sec-Fetch-Site cross-site": {"Sec-Fetch-Site", "cross-site"},
		"Sec-Fetch-Site same-site":  {"Sec-Fetch-Site", "same-site"},
		"foreign Origin":            {"Sec-Fetch-Site", "", "Origin", "https://evil.example"},
	} {
		r := c.post(l.Path+"/unlock", good, hdr...)
		checkPageHeaders(t, name, r)
		if r.Status != http.StatusForbidden {
			t.Fatalf("%s: %d", name, r.Status)
		}
		mustContain(t, r, "came from another site")
	}
	// Same origin, but without the form's token (or with another one).
	other := []byte(c.cookie(l.Path, web.CSRFCookie))
	other[0] ^= 1
	for name, tok := range map[string]string{"missing": "", "wrong": string(other)} {
		form := url.Values{"password": {"correct horse battery"}, "csrf": {tok}}
		r := c.post(l.Path+"/unlock", form)
		if r.Status != http.StatusSeeOther || r.Location != l.Path+"?e=form" {
			t.Fatalf("%s token: %d → %q", name, r.Status, r.Location)
		}
		mustContain(t, c.follow(r), "This page had expired")
	}
	if c.cookie(l.Path, httpapi.AccessCookie) != "" {
		t.Fatal("a refused form opened the link")
	}
	// Nothing was counted against the link either.
	if r := c.post(l.Path+"/unlock", good); r.Location != l.Path+"/files?open=1" {
		t.Fatalf("the real form afterwards: %d → %q", r.Status, r.Location)
	}
}

func TestSeveralTargetsAndFolderAreListed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	several := e.create(t, linkSpec{linkType: "editor", title: "Design review", targets: []target{
		{ID: "spec.pdf", Type: "file", Name: "Spec.pdf"},
		{ID: "mock-ups", Type: "folder", Name: "Mock-ups"},
		{ID: "notes", Type: "file", Name: "Notes <draft>", NoURL: true},
	}})
	c := e.client(t)
	land := c.get(several.Path)
	mustContain(t, land, "2 files and 1 folder", "View and edit", `action="`+several.Path+`/unlock"`, ">Open</button>")
	mustNotContain(t, land, "Spec.pdf", "Mock-ups")

	r := c.post(several.Path+"/unlock", url.Values{})
	if r.Status != http.StatusSeeOther || r.Location != several.Path+"/files" {
		t.Fatalf("open several: %d → %q", r.Status, r.Location)
	}
	list := c.follow(r)
	checkPageHeaders(t, "files", list)
	mustContain(t, list, "Spec.pdf", "Mock-ups", "Notes &lt;draft&gt;", "Not available on the web", "View and edit",
		`href="`+several.Path+`/go?target=spec.pdf"`, `href="`+several.Path+`/go?target=mock-ups"`,
		`Open<span class="vh"> Spec.pdf</span>`)
	mustNotContain(t, list, "go?target=notes", "http-equiv")

	opened := c.get(several.Path + "/go?target=mock-ups")
	if opened.Status != http.StatusFound || !strings.HasPrefix(opened.Location, e.storage.URL+"/files/mock-ups?grant=") {
		t.Fatalf("open folder: %d → %q", opened.Status, opened.Location)
	}
	if r := c.get(several.Path + "/go?target=nope"); r.Status != http.StatusSeeOther || r.Location != several.Path+"/files" {
		t.Fatalf("unknown target: %d → %q", r.Status, r.Location)
	}

	// One folder is listed too: it is not opened blind.
	folder := e.create(t, linkSpec{linkType: "upload", targets: []target{{ID: "inbox", Type: "folder", Name: "Inbox"}}})
	c.get(folder.Path)
	r = c.post(folder.Path+"/unlock", url.Values{"csrf": {c.cookie(several.Path, web.CSRFCookie)}})
	if r.Location != folder.Path+"?e=form" {
		t.Fatalf("another link's token must not pass: %q", r.Location)
	}
	r = c.post(folder.Path+"/unlock", url.Values{})
	if r.Location != folder.Path+"/files" {
		t.Fatalf("open folder link: %d → %q", r.Status, r.Location)
	}
	mustContain(t, c.follow(r), "Inbox", "Folder", "Upload")
}

func TestSessionEndShowsTheStepAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	l := e.create(t, linkSpec{auth: password("correct horse battery")})
	c := e.client(t)
	if r := c.get(l.Path + "/files"); r.Status != http.StatusSeeOther || r.Location != l.Path {
		t.Fatalf("files without access: %d → %q", r.Status, r.Location)
	}
	u, _ := url.Parse(e.URL + l.Path)
	c.hc.Jar.SetCookies(u, []*http.Cookie{{Name: httpapi.AccessCookie, Value: "sla_expired", Path: l.Path}})
	for _, sub := range []string{"/files", "/go?target=plan.pdf"} {
		r := c.get(l.Path + sub)
		if r.Status != http.StatusSeeOther || r.Location != l.Path+"?e=session" {
			t.Fatalf("%s with an ended session: %d → %q", sub, r.Status, r.Location)
		}
	}
	mustContain(t, c.get(l.Path+"?e=session"), "Your access has ended", `type="password"`)
}

func TestJSONClientsStillGetJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	l := e.create(t, linkSpec{auth: emailOTP("ann@example.com")})
	p := e.client(t).get(l.Path, "Accept", "application/json")
	if p.Status != http.StatusOK || !strings.Contains(p.Body, `"auth_type":"email_otp"`) {
		t.Fatalf("JSON landing: %d %s", p.Status, p.Body)
	}
}

func TestCodeFlowMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{mail: true})
	l := e.create(t, linkSpec{auth: emailOTP("ann.example@example.com")})
	c := e.client(t)

	land := c.get(l.Path)
	mustContain(t, land, "Send me a code", "by email", `action="`+l.Path+`/send-code"`, `href="`+l.Path+`/code"`)
	mustNotContain(t, land, "ann.example@example.com")
	if !regexp.MustCompile(`<strong class="dest">[^<]*\*[^<]*@example\.com</strong>`).MatchString(land.Body) {
		t.Fatalf("no masked address on the landing page:\n%s", land.Body)
	}

	sent := c.post(l.Path+"/send-code", url.Values{})
	if sent.Status != http.StatusSeeOther || !strings.HasPrefix(sent.Location, l.Path+"/code?sent=1&r=") {
		t.Fatalf("send code: %d → %q", sent.Status, sent.Location)
	}
	codePage := c.follow(sent)
	checkPageHeaders(t, "code", codePage)
	mustContain(t, codePage, `autocomplete="one-time-code"`, `inputmode="numeric"`, "Code sent.")
	wait := regexp.MustCompile(`data-countdown="(\d+)">You can ask for a new code in <span data-countdown-text>(\d+) seconds</span>`).
		FindStringSubmatch(codePage.Body)
	if wait == nil || wait[1] != wait[2] || wait[1] < "28" || wait[1] > "31" {
		t.Fatalf("resend wait %v (the service's gap is 30s):\n%s", wait, codePage.Body)
	}
	code := e.waitCode(t, 1)

	// Asking again at once is throttled, with the wait shown.
	again := c.post(l.Path+"/send-code", url.Values{})
	if !strings.HasPrefix(again.Location, l.Path+"/code?e=throttled&r=") {
		t.Fatalf("second request: %d → %q", again.Status, again.Location)
	}
	mustContain(t, c.follow(again), "A code was sent a moment ago", "data-countdown=")

	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	for _, tc := range []struct{ code, want string }{
		{"", "Enter the 6-digit code"},
		{"12ab", "The code is 6 digits"},
		{wrong, "You have 4 attempts left."},
		{wrong, "You have 3 attempts left."},
	} {
		r := c.post(l.Path+"/unlock", url.Values{"code": {tc.code}})
		if r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Location, l.Path+"/code?e=") {
			t.Fatalf("code %q: %d → %q", tc.code, r.Status, r.Location)
		}
		mustContain(t, c.follow(r), tc.want, `aria-invalid="true"`)
	}
	for range 2 {
		c.post(l.Path+"/unlock", url.Values{"code": {wrong}})
	}
	r := c.post(l.Path+"/unlock", url.Values{"code": {wrong}})
	mustContain(t, c.follow(r), "Too many wrong codes")
	r = c.post(l.Path+"/unlock", url.Values{"code": {code}})
	mustContain(t, c.follow(r), "Too many wrong codes") // the locked code stays dead
	if c.cookie(l.Path, httpapi.AccessCookie) != "" {
		t.Fatal("a locked code opened the link")
	}
	if e.obs.get("request:accepted") != 1 || e.obs.get("request:throttled") != 1 || e.obs.get("verify:locked") < 1 ||
		e.obs.get("verify:bad_code") < 4 {
		t.Fatalf("observer counts %v", e.obs.counts)
	}
}

// The pages follow a link's OTP policy: the code's length (in the words,
// the input's pattern and the errors), its lifetime and the resend wait.
func TestCodePagesFollowTheLinksPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{mail: true})
	l := e.create(t, linkSpec{auth: emailOTP("kim@example.com"),
		otp: map[string]any{"code_length": 8, "code_ttl": 180, "resend_after": 90}})
	c := e.client(t)
	mustContain(t, c.get(l.Path), "we will send an 8-digit code")
	sent := c.post(l.Path+"/send-code", url.Values{})
	codePage := c.follow(sent)
	mustContain(t, codePage, "We sent an 8-digit code", "The code works once, for 3 minutes.", `pattern="[0-9]{8}"`, `maxlength="8"`)
	wait := regexp.MustCompile(`data-countdown="(\d+)"`).FindStringSubmatch(codePage.Body)
	if wait == nil || wait[1] < "88" || wait[1] > "91" {
		t.Fatalf("resend wait %v, want the link's 90 s:\n%s", wait, codePage.Body)
	}
	if m := e.smtp.WaitMessages(t, 1, 20*time.Second)[0]; !regexp.MustCompile(`\b\d{8}\b`).MatchString(m.Text) {
		t.Fatalf("no 8-digit code in the email:\n%s", m.Text)
	}
	r := c.post(l.Path+"/unlock", url.Values{"code": {"123456"}})
	mustContain(t, c.follow(r), "The code is 8 digits, like 12345678.")
	r = c.post(l.Path+"/unlock", url.Values{"code": {""}})
	mustContain(t, c.follow(r), "Enter the 8-digit code we sent you.")
}

func TestExpiredCodeAndFailedSend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{mail: true, stack: []testkit.StackOption{func(c *link.Config) {
		c.OTP = link.OTPLimits{TTL: 10 * time.Minute, MinGap: time.Second, PerLinkHour: 10, PerDestinationHour: 10, MaxWrongCodes: 5}
	}}})
	l := e.create(t, linkSpec{auth: emailOTP("bob@example.com")})
	c := e.client(t)
	c.get(l.Path)
	c.post(l.Path+"/send-code", url.Values{})
	code := e.waitCode(t, 1)
	if _, err := e.st.Pool.Exec(context.Background(),
		`UPDATE otp_challenges SET expires_at = now() - interval '1 second' WHERE link_id = $1`, l.ID); err != nil {
		t.Fatal(err)
	}
	r := c.post(l.Path+"/unlock", url.Values{"code": {code}})
	mustContain(t, c.follow(r), "That code has expired")

	// The mail server refuses the next code for good: the page says so.
	e.smtp.FailNext(5, 550, "mailbox unavailable")
	var sent page
	testkit.Eventually(t, 5*time.Second, func() bool {
		sent = c.post(l.Path+"/send-code", url.Values{})
		return strings.Contains(sent.Location, "sent=1")
	}, "a new code is accepted once the gap has passed")
	testkit.Eventually(t, 20*time.Second, func() bool {
		var status string
		_ = e.st.Pool.QueryRow(context.Background(),
			`SELECT status FROM otp_challenges WHERE link_id = $1 ORDER BY created_at DESC LIMIT 1`, l.ID).Scan(&status)
		return status == "failed"
	}, "the refused code is marked failed")
	failed := c.post(l.Path+"/send-code", url.Values{})
	if !strings.HasPrefix(failed.Location, l.Path+"/code?e=send_failed") {
		t.Fatalf("after a failed send: %d → %q", failed.Status, failed.Location)
	}
	mustContain(t, c.follow(failed), "We could not deliver the last code to")
}

func TestAssets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{brand: compose.Brand{Name: "Acme Files", AccentColor: "#facc15", LogoURL: "https://cdn.acme.example/logo.png"}})
	l := e.create(t, linkSpec{})
	c := e.client(t)
	land := c.get(l.Path)
	mustContain(t, land, `<img src="https://cdn.acme.example/logo.png" alt="Acme Files"`, "– Acme Files</title>")
	if csp := land.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' https://cdn.acme.example;") {
		t.Fatalf("CSP does not allow the logo: %q", csp)
	}
	refs := regexp.MustCompile(`(?:href|src)="(/assets/[^"]+)"`).FindAllStringSubmatch(land.Body, -1)
	if len(refs) != 4 {
		t.Fatalf("asset references %v", refs)
	}
	for _, m := range refs {
		ref := strings.ReplaceAll(m[1], "&amp;", "&")
		a := c.get(ref)
		if a.Status != http.StatusOK || a.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
			a.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: %d %v", ref, a.Status, a.Header)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(ref, "/assets/"), "?")
		ct := map[string]string{"app.css": "text/css", "theme.css": "text/css", "app.js": "text/javascript", "icon.svg": "image/svg+xml"}[name]
		if !strings.HasPrefix(a.Header.Get("Content-Type"), ct) {
			t.Fatalf("%s: Content-Type %q", name, a.Header.Get("Content-Type"))
		}
		if name == "theme.css" && !strings.Contains(a.Body, "--accent:#facc15;--accent-ink:#18181b") {
			t.Fatalf("theme for a yellow accent: %s", a.Body)
		}
	}
	if r := c.get("/assets/app.css?v=old"); r.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("a stale version must not be cached for long: %q", r.Header.Get("Cache-Control"))
	}
	if r := c.get("/assets/nope.js"); r.Status != http.StatusNotFound {
		t.Fatalf("unknown asset: %d", r.Status)
	}
}
