package web_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/sharelinks/sharelinks/internal/compose"
)

// brandForScreens is an owner's branding, so screenshots show the hook.
var brandForScreens = compose.Brand{Name: "Northwind Legal", AccentColor: "#0f766e"}

// axePath is axe-core as `npm ci --prefix internal/web/testdata/axe` installs it.
const axePath = "testdata/axe/node_modules/axe-core/axe.min.js"

type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

// axeRun runs axe-core in the current page and returns its violations. It
// injects axe-core unless preloadAxe did; scripts from DevTools are not
// subject to the page's CSP.
func axeRun(b *tab, src string) []axeViolation {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	if !eval[bool](b, `typeof axe === 'object'`) {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](src)); err != nil {
			b.fail("inject axe-core: %v", err)
		}
	}
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](`axe.run(document, {resultTypes: ['violations']}).then(r =>
  r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))})))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		b.fail("axe.run: %v", err)
	}
	return v
}

// TestBrowserAccessibility runs axe-core on every kind of page, on a phone
// and a desktop, with the default look and with a pale accent colour (the
// theme must keep contrast on its own). Serious and critical violations
// fail; so do lesser ones, as there is no reason to accept any. Each page
// must also fit a 320px screen without sideways scrolling.
func TestBrowserAccessibility(t *testing.T) {
	t.Parallel()
	b := newTab(t, desktopW, desktopH)
	raw, err := os.ReadFile(axePath)
	if err != nil {
		abs, _ := filepath.Abs(axePath)
		t.Skip("SKIP: axe-core not found at " + abs + ": run npm ci --prefix internal/web/testdata/axe")
	}
	src := string(raw)

	// The check itself must be able to fail: a page whose field lost its
	// label and whose text lost its contrast is reported.
	probe := newEnv(t, envOpts{})
	b.navigate(probe.URL + probe.create(t, linkSpec{auth: password("correct horse battery")}).Path)
	eval[bool](b, `document.querySelector('label[for=password]').remove();
var ss = document.styleSheets[0]; ss.insertRule('footer p{color:#ddd}', ss.cssRules.length); true`)
	seen := map[string]bool{}
	for _, v := range axeRun(b, src) {
		seen[v.ID] = true
	}
	if !seen["label"] || !seen["color-contrast"] {
		t.Fatalf("axe-core did not report a missing label and poor contrast: %v", seen)
	}

	for _, brand := range []compose.Brand{{}, {Name: "Sunny Co", AccentColor: "#facc15"}} {
		t.Run("accent"+brand.AccentColor, func(t *testing.T) {
			t.Parallel()
			checkPages(t, newTab(t, desktopW, desktopH), src, brand)
		})
	}
}

// preloadAxe has the browser run axe-core in every page the tab opens, so
// the 650 kB script crosses the DevTools pipe once.
func preloadAxe(b *tab, src string) {
	b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: src})
		return err
	}))
}

// checkPages runs axe-core on each kind of page in both viewports.
func checkPages(t *testing.T, b *tab, src string, brand compose.Brand) {
	preloadAxe(b, src)
	e := newEnv(t, envOpts{brand: brand})
	pw := e.create(t, linkSpec{auth: password("correct horse battery"), title: "Board pack",
		message: "Hi,\nthe board pack for Thursday."})
	otp := e.create(t, linkSpec{auth: emailOTP("ann@example.com"), title: "Contract"})
	open := e.create(t, linkSpec{title: "Hand-over", targets: []target{
		{ID: "d", Type: "folder", Name: "Drawings"}, {ID: "b", Type: "file", Name: "Budget.xlsx"},
		{ID: "n", Type: "file", Name: "Notes", NoURL: true}}})
	locked := e.create(t, linkSpec{auth: password("correct horse battery")})
	c := e.client(t)
	c.get(locked.Path)
	for range 5 {
		c.post(locked.Path+"/unlock", url.Values{"password": {"wrong guess"}})
	}
	dead := e.create(t, linkSpec{})
	e.expire(t, dead)
	resendAt := fmt.Sprint(time.Now().Add(40 * time.Second).Unix())

	type state struct {
		name  string
		visit func()
	}
	states := []state{
		{"password", func() { b.navigate(e.URL + pw.Path) }},
		{"password-error", func() { b.navigate(e.URL + pw.Path + "?e=password") }},
		{"otp", func() { b.navigate(e.URL + otp.Path) }},
		{"code-error-wait", func() { b.navigate(e.URL + otp.Path + "/code?e=code&n=3&r=" + resendAt) }},
		{"code-sent", func() { b.navigate(e.URL + otp.Path + "/code?sent=1") }},
		{"open", func() { b.navigate(e.URL + open.Path) }},
		{"files", func() {
			b.navigate(e.URL + open.Path)
			if eval[bool](b, `!!document.querySelector('form[action$="/unlock"]')`) {
				b.submit(chromedp.Click(chromedp.CSS(`form[action$="/unlock"] button`)))
			} else {
				b.navigate(e.URL + open.Path + "/files")
			}
		}},
		{"verified", func() { b.navigate(e.URL + open.Path) }},
		{"locked", func() { b.navigate(e.URL + locked.Path) }},
		{"not-found", func() { b.navigate(e.URL + dead.Path) }},
	}
	for _, vp := range []struct {
		name string
		w, h int64
	}{{"desktop", desktopW, desktopH}, {"phone", 320, 640}} {
		b.do(chromedp.EmulateViewport(vp.w, vp.h))
		for _, s := range states {
			s.visit()
			where := fmt.Sprintf("%s page, %s, accent %q", s.name, vp.name, brand.AccentColor)
			for _, v := range axeRun(b, src) {
				t.Errorf("%s: axe %s (%s): %s at %s", where, v.ID, v.Impact, v.Help, strings.Join(v.Nodes, ", "))
			}
			if !eval[bool](b, `document.documentElement.scrollWidth <= window.innerWidth`) {
				t.Errorf("%s: the page scrolls sideways", where)
			}
			b.noCSPViolations()
			if shot := screens[where]; shot != "" {
				b.screenshot(shot)
			}
		}
	}
}

// screens are the states of TestBrowserAccessibility worth a picture.
var screens = map[string]string{
	`locked page, desktop, accent ""`:               "too-many-attempts",
	`code-error-wait page, phone, accent "#facc15"`: "code-wait-pale-accent-phone",
	`files page, phone, accent "#facc15"`:           "files-pale-accent-phone",
}
