package web_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The browser tests drive a real headless Chromium (Debian's chromium
// package) as a person would: typing, clicking, pressing Tab and Enter.
// One browser serves the whole package; each test gets its own tab in its
// own browser context, so cookies never leak between tests.

const chromiumPath = "/usr/bin/chromium"

// browser is started by the first test that needs it and stopped by TestMain.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel()
	}
	os.Exit(code)
}

func findChromium() (string, error) {
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath, nil
	}
	return exec.LookPath("chromium")
}

func startBrowser(path string) {
	dir, err := os.MkdirTemp("", "sharelinks-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	browser.ctx = bctx
	browser.cancel = func() { bcancel(); acancel(); _ = os.RemoveAll(dir) }
	// The first Do starts the browser, bound to a context without deadline.
	browser.err = chromedp.Do(bctx)
}

// cspProbe records Content-Security-Policy violations of every page, so a
// test can prove nothing it relied on was blocked.
const cspProbe = `window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});`

type tab struct {
	t   *testing.T
	ctx context.Context
}

// newTab opens a fresh tab, or skips the test when there is no Chromium.
func newTab(t *testing.T, width, height int64) *tab {
	t.Helper()
	path, err := findChromium()
	if err != nil {
		t.Skip("SKIP: chromium not found at " + chromiumPath + ": browser tests need it (apt-get install chromium)")
	}
	browser.once.Do(func() { startBrowser(path) })
	if browser.err != nil {
		t.Fatalf("start chromium (%s): %v", path, browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx}
	_ = os.Remove(filepath.Join(artifactsDir(t), tb.failName()+".png")) // from an earlier run
	if err := chromedp.Do(ctx); err != nil {                            // opens the tab, for the test's whole life
		t.Fatalf("open tab: %v", err)
	}
	tb.do(chromedp.EmulateViewport(width, height), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: cspProbe})
		return err
	}))
	return tb
}

// phone and desktop are the viewports the pages must work in.
const (
	phoneW, phoneH     = 390, 844
	desktopW, desktopH = 1280, 900
)

const step = 30 * time.Second

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("%v", err)
	}
}

// navigate does what clicking the link in an email does, and returns the status.
func (b *tab) navigate(url string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		b.fail("navigate: %v", err)
	}
	return resp.Status
}

// submit runs actions that send a form or follow a link and waits for the
// next page; it returns that page's status.
func (b *tab) submit(actions ...chromedp.Action[chromedp.Void]) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, actions...)
	if err != nil {
		b.fail("submit: %v", err)
	}
	return resp.Status
}

func eval[T any](b *tab, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.fail("evaluate %.60q: %v", js, err)
	}
	return v
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.fail("text of %s: %v", sel, err)
	}
	return strings.Join(strings.Fields(s), " ")
}

// activeID is the id of the focused element.
func (b *tab) activeID() string {
	return eval[string](b, `document.activeElement ? document.activeElement.id : ''`)
}

// noCSPViolations fails if the current page had anything blocked.
func (b *tab) noCSPViolations() {
	b.t.Helper()
	if v := eval[[]string](b, `window.__csp || []`); len(v) > 0 {
		b.fail("Content-Security-Policy blocked: %v", v)
	}
}

// waitFor polls a JavaScript condition until it holds. Evaluation errors
// while the page navigates (its context is gone for a moment) are retried.
func (b *tab) waitFor(js string) {
	b.t.Helper()
	deadline := time.Now().Add(step)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	b.fail("waiting for %s: %v", js, last)
}

// fail saves what the page looked like before failing the test.
func (b *tab) fail(format string, args ...any) {
	b.t.Helper()
	b.screenshot(b.failName())
	b.t.Fatalf(format, args...)
}

func (b *tab) failName() string {
	return "FAILED-" + strings.NewReplacer("/", "-", " ", "-").Replace(b.t.Name())
}

// screenshot saves the whole page as test-artifacts/web/NAME.png.
func (b *tab) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	dir := artifactsDir(b.t)
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Errorf("save screenshot: %v", err)
	}
}

// artifactsDir is test-artifacts/web at the repository root (git-ignored).
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
	out := filepath.Join(dir, "test-artifacts", "web")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// reachedStorage waits until the browser is on the owner's storage page
// for target id, and checks the grant it carried.
func reachedStorage(b *tab, e *env, targetID string) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf(`location.origin === %q && !!document.getElementById('storage')`, e.storage.URL))
	if got := b.text("#path"); got != "/files/"+targetID {
		b.fail("storage page for %q, want %q", got, "/files/"+targetID)
	}
	var last *visit
	for _, v := range e.storage.Visits() {
		if strings.HasPrefix(v.Path, "/files/") {
			last = &v
		}
	}
	if last == nil || last.Grant.Sub != targetID || last.Grant.Lid == "" {
		b.fail("storage saw no valid grant for %s: %+v", targetID, e.storage.Visits())
	}
}

func TestBrowserPasswordFlowKeyboardOnly(t *testing.T) {
	t.Parallel()
	b := newTab(t, desktopW, desktopH)
	e := newEnv(t, envOpts{brand: brandForScreens})
	l := e.create(t, linkSpec{auth: password("correct horse battery"), linkType: "view", title: "Board pack, Q3",
		message: "Hi Ann,\nthe board pack for Thursday. The password is in my text message."})

	if st := b.navigate(e.URL + l.Path); st != 200 {
		b.fail("landing status %d", st)
	}
	if h := b.text("h1"); h != "Board pack, Q3" {
		b.fail("heading %q", h)
	}
	b.screenshot("password-landing")
	// Keyboard only: the first Tab lands in the password field.
	b.do(chromedp.KeyEvent("\t"))
	if id := b.activeID(); id != "password" {
		b.fail("first Tab focused %q, want the password field", id)
	}
	b.submit(chromedp.KeyEvent("not the password\r"))
	if msg := b.text(".error"); !strings.Contains(msg, "That password is not right.") {
		b.fail("error %q", msg)
	}
	// After an error the field has focus again, described by the message.
	if id := b.activeID(); id != "password" {
		b.fail("focus after an error on %q", id)
	}
	if d := eval[string](b, `document.getElementById('password').getAttribute('aria-describedby')`); d != "password-error" {
		b.fail("aria-describedby %q", d)
	}
	b.noCSPViolations()
	b.screenshot("password-wrong")
	b.submit(chromedp.KeyEvent("correct horse battery\r"))
	reachedStorage(b, e, "plan.pdf")
	b.screenshot("password-opened-storage")
}

func TestBrowserEmailCodeFlowOnPhone(t *testing.T) {
	t.Parallel()
	b := newTab(t, phoneW, phoneH)
	e := newEnv(t, envOpts{mail: true, brand: brandForScreens})
	l := e.create(t, linkSpec{auth: emailOTP("ann.lee@example.com"), title: "Signed contract",
		targets: []target{{ID: "contract.pdf", Type: "file", Name: "Contract (signed).pdf"}}})

	b.navigate(e.URL + l.Path)
	if s := b.text("strong.dest"); !strings.HasSuffix(s, "@example.com") || strings.Contains(s, "ann.lee") {
		b.fail("destination shown as %q", s)
	}
	b.screenshot("code-landing-phone")
	if w := eval[bool](b, `document.documentElement.scrollWidth <= window.innerWidth`); !w {
		b.fail("the landing page scrolls sideways on a phone")
	}
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/send-code"] button`)))
	if h := b.text("h1"); h != "Enter your code" {
		b.fail("after asking for a code: %q", h)
	}
	if p := b.text("main"); !strings.Contains(p, "The code works once, for 10 minutes.") {
		b.fail("the code's lifetime is not said: %q", p)
	}
	// The resend button waits for the server's throttle, counting down.
	if dis := eval[bool](b, `document.querySelector('.resend button').disabled`); !dis {
		b.fail("resend button enabled during the wait")
	}
	first := b.text("[data-countdown-text]")
	b.waitFor(fmt.Sprintf(`(document.querySelector('[data-countdown-text]')||{}).textContent !== %q`, first))
	if id := b.activeID(); id != "code" {
		b.fail("the code field should have focus, not %q", id)
	}
	for attr, want := range map[string]string{"autocomplete": "one-time-code", "inputmode": "numeric"} {
		if got := eval[string](b, `document.getElementById('code').getAttribute('`+attr+`')`); got != want {
			b.fail("code input %s=%q", attr, got)
		}
	}
	code := e.waitCode(t, 1)
	b.screenshot("code-entry-phone")
	b.do(chromedp.SendKeys(chromedp.CSS("#code"), code))
	b.noCSPViolations()
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
	reachedStorage(b, e, "contract.pdf")
	b.screenshot("code-opened-storage")
}

func TestBrowserWrongCodeThenRight(t *testing.T) {
	t.Parallel()
	b := newTab(t, desktopW, desktopH)
	e := newEnv(t, envOpts{mail: true, brand: brandForScreens})
	l := e.create(t, linkSpec{auth: emailOTP("bob@example.com"), title: "Site photos", linkType: "view",
		targets: []target{{ID: "photos", Type: "folder", Name: "Site photos"}, {ID: "map.pdf", Type: "file", Name: "Site map.pdf"}}})

	b.navigate(e.URL + l.Path)
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/send-code"] button`)))
	code := e.waitCode(t, 1)
	wrong := []byte(code)
	wrong[0] = '0' + (wrong[0]-'0'+1)%10
	// Typed with a space, as people copy codes; the page keeps the digits.
	b.do(chromedp.SendKeys(chromedp.CSS("#code"), string(wrong[:3])+" "+string(wrong[3:])))
	if v := eval[string](b, `document.getElementById('code').value`); v != string(wrong) {
		b.fail("code field holds %q", v)
	}
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
	if msg := b.text(".error"); msg != "Error: That code is not right. You have 4 attempts left." {
		b.fail("wrong code message %q", msg)
	}
	if inv := eval[string](b, `document.getElementById('code').getAttribute('aria-invalid')`); inv != "true" {
		b.fail("aria-invalid %q", inv)
	}
	b.screenshot("code-wrong")
	b.do(chromedp.SendKeys(chromedp.CSS("#code"), code))
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
	// Two items: a list, with the link type, names now shown.
	if h := b.text("#items-heading"); h != "1 file and 1 folder" {
		b.fail("files heading %q", h)
	}
	if got := b.text(".facts"); !strings.Contains(got, "View only") {
		b.fail("link type not shown: %q", got)
	}
	b.noCSPViolations()
	b.submit(chromedp.Click(chromedp.CSS(`a[href$="target=map.pdf"]`)))
	reachedStorage(b, e, "map.pdf")
}

// A link whose policy asks for 8 digits: the page says so, and the code
// typed as people copy it (with a space) keeps all 8 digits in a real
// browser, where the script that cleans the input runs.
func TestBrowserEightDigitCode(t *testing.T) {
	t.Parallel()
	b := newTab(t, desktopW, desktopH)
	e := newEnv(t, envOpts{mail: true, brand: brandForScreens})
	l := e.create(t, linkSpec{auth: emailOTP("eight@example.com"), otp: map[string]any{"code_length": 8, "code_ttl": 300}})
	b.navigate(e.URL + l.Path)
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/send-code"] button`)))
	if p := b.text("main"); !strings.Contains(p, "We sent an 8-digit code") || !strings.Contains(p, "for 5 minutes") {
		b.fail("the code page does not describe the link's codes: %q", p)
	}
	msg := e.smtp.WaitMessages(t, 1, 20*time.Second)[0].Text
	code := regexp.MustCompile(`(?m)^\s+(\d{8})\s*$`).FindStringSubmatch(msg)
	if code == nil {
		t.Fatalf("no 8-digit code in the email:\n%s", msg)
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#code"), code[1][:4]+" "+code[1][4:]))
	if v := eval[string](b, `document.getElementById('code').value`); v != code[1] {
		b.fail("code field holds %q, want the 8 digits %q", v, code[1])
	}
	b.noCSPViolations()
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
	reachedStorage(b, e, "plan.pdf")
}

func TestBrowserExpiredLink(t *testing.T) {
	t.Parallel()
	b := newTab(t, phoneW, phoneH)
	e := newEnv(t, envOpts{brand: brandForScreens})
	l := e.create(t, linkSpec{auth: password("correct horse battery"), title: "Old invoices"})
	e.expire(t, l)
	if st := b.navigate(e.URL + l.Path); st != 404 {
		b.fail("expired link status %d", st)
	}
	if h := b.text("h1"); h != "This link is not available" {
		b.fail("heading %q", h)
	}
	if strings.Contains(eval[string](b, `document.body.innerText`), "Old invoices") {
		b.fail("a dead link must not show its title")
	}
	b.noCSPViolations()
	b.screenshot("link-expired-phone")
}

func TestBrowserFolderListing(t *testing.T) {
	t.Parallel()
	b := newTab(t, desktopW, desktopH)
	e := newEnv(t, envOpts{brand: brandForScreens})
	l := e.create(t, linkSpec{linkType: "download", title: "Project Falcon hand-over",
		message: "Everything for the hand-over. The drawings folder has the latest revisions.",
		targets: []target{
			{ID: "drawings", Type: "folder", Name: "Drawings"},
			{ID: "budget.xlsx", Type: "file", Name: "Budget 2026.xlsx"},
			{ID: "readme", Type: "file", Name: "Read me first.txt"},
		}})
	b.navigate(e.URL + l.Path)
	if got := b.text(".facts"); !strings.Contains(got, "2 files and 1 folder") || !strings.Contains(got, "View and download") {
		b.fail("facts %q", got)
	}
	if strings.Contains(eval[string](b, `document.body.innerText`), "Drawings") {
		b.fail("names before opening")
	}
	b.screenshot("open-link-landing")
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
	names := eval[[]string](b, `[...document.querySelectorAll('.item-name')].map(n => n.textContent)`)
	if strings.Join(names, "|") != "Drawings|Budget 2026.xlsx|Read me first.txt" {
		b.fail("listed %v", names)
	}
	// Each Open button names its item for screen readers.
	labels := eval[[]string](b, `[...document.querySelectorAll('.item a.button')].map(a => a.textContent.trim())`)
	if len(labels) != 3 || labels[0] != "Open Drawings" {
		b.fail("button names %v", labels)
	}
	b.noCSPViolations()
	b.screenshot("files-list")
	b.submit(chromedp.Click(chromedp.CSS(`a[href$="target=drawings"]`)))
	reachedStorage(b, e, "drawings")
}

// TestBrowserWithoutJavaScript: the code flow still works with scripts off,
// the wait shown in words.
func TestBrowserWithoutJavaScript(t *testing.T) {
	t.Parallel()
	b := newTab(t, desktopW, desktopH)
	e := newEnv(t, envOpts{mail: true})
	l := e.create(t, linkSpec{auth: emailOTP("carol@example.com")})
	b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	b.navigate(e.URL + l.Path)
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/send-code"] button`)))
	if w := b.text("#resend-wait"); !strings.HasPrefix(w, "You can ask for a new code in ") || !strings.HasSuffix(w, " seconds.") {
		b.fail("wait text %q", w)
	}
	// Scripts really are off: nothing disabled the resend button.
	if dis := eval[bool](b, `document.querySelector('.resend button').disabled`); dis {
		b.fail("the resend button was disabled: scripts ran")
	}
	code := e.waitCode(t, 1)
	b.do(chromedp.SendKeys(chromedp.CSS("#code"), code))
	b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
	reachedStorage(b, e, "plan.pdf")
}
