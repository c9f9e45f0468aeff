package web

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/link"
)

func TestThemeKeepsContrastForAnyAccent(t *testing.T) {
	t.Parallel()
	for _, accent := range []string{"#2563eb", "#facc15", "#ffffff", "#000000", "#777777", "#0f766e", "#f0f", "#ff000080", "#e11d48", "bogus"} {
		css := string(themeCSS(accent))
		var button, ink, text string
		if _, err := fmt.Sscanf(strings.NewReplacer(";", " ", "}", " ").Replace(css),
			":root{--accent:%s --accent-ink:%s --accent-text:%s", &button, &ink, &text); err != nil {
			t.Fatalf("%s: %q: %v", accent, css, err)
		}
		b, _ := parseHex(button)
		i, _ := parseHex(ink)
		l, _ := parseHex(text)
		if r := contrast(b, i); r < 4.5 {
			t.Errorf("%s: button text %s on %s has contrast %.2f", accent, ink, button, r)
		}
		if r := contrast(l, paleBox); r < 4.5 {
			t.Errorf("%s: link colour %s on the pale box has contrast %.2f", accent, text, r)
		}
		if r := contrast(l, white); r < 3 {
			t.Errorf("%s: focus ring %s on white has contrast %.2f", accent, text, r)
		}
	}
	// A usable brand colour is kept as it is.
	if css := string(themeCSS("#0f766e")); !strings.HasPrefix(css, ":root{--accent:#0f766e;--accent-ink:#ffffff;") {
		t.Fatalf("theme changed a good accent: %s", css)
	}
}

func TestContrastMatchesWCAG(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want float64
	}{{"#000000", "#ffffff", 21}, {"#ffffff", "#ffffff", 1}, {"#2563eb", "#ffffff", 5.17}, {"#52525b", "#f4f4f5", 7.0}} {
		a, _ := parseHex(tc.a)
		b, _ := parseHex(tc.b)
		if got := contrast(a, b); got < tc.want-0.05 || got > tc.want+0.05 {
			t.Errorf("contrast(%s, %s) = %.2f, want %.2f", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestFailuresLogNoToken: the one place pages log is the failure page; it
// names the route pattern, never the path that holds the token.
func TestFailuresLogNoToken(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	p := New(nil, Config{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	const token = "SECRETtoken0123456789abcdefghij"
	mux := http.NewServeMux()
	mux.Handle("GET /s/{token}/boom", p.page(func(http.ResponseWriter, *http.Request) error {
		return errors.New("database on fire")
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/s/"+token+"/boom?target=x", nil)
	rec.Header().Set("X-Request-Id", "req-42")
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "req-42") {
		t.Fatalf("failure page %d:\n%s", rec.Code, rec.Body)
	}
	out := logs.String()
	if !strings.Contains(out, "database on fire") || !strings.Contains(out, "/s/{token}/boom") || !strings.Contains(out, "req-42") {
		t.Fatalf("log lacks the error, route or request id: %s", out)
	}
	if strings.Contains(out, token) || strings.Contains(rec.Body.String(), token) || strings.Contains(rec.Body.String(), "database") {
		t.Fatalf("token or internal error leaked:\nlog %s\npage %s", out, rec.Body)
	}
}

func TestErrorsBecomePages(t *testing.T) {
	t.Parallel()
	p := New(nil, Config{})
	locked := apperr.New(apperr.TooMany, "too_many_attempts", "x")
	locked.RetryAfter = 90 * time.Second
	for _, tc := range []struct {
		err    error
		status int
		want   string
	}{
		{apperr.LinkNotFound(), 404, "This link is not available"},
		{fmt.Errorf("wrapped: %w", apperr.LinkNotFound()), 404, "This link is not available"},
		{locked, 429, "try again in 2 minutes"},
		{apperr.New(apperr.TooLarge, "body_too_large", "x"), 413, "more than this form takes"},
	} {
		rec := httptest.NewRecorder()
		p.renderError(rec, httptest.NewRequest("GET", "/", nil), tc.err)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%v: %d, want %d with %q", tc.err, rec.Code, tc.status, tc.want)
		}
	}
}

func TestInvalidBrandFallsBack(t *testing.T) {
	t.Parallel()
	cfg := Config{Brand: compose.Brand{Name: "Acme", AccentColor: "red; } body { display:none", LogoURL: "javascript:alert(1)"}}
	if cfg.Validate() == nil {
		t.Fatal("Validate accepted a bad brand")
	}
	p := New(nil, cfg)
	if p.brand.Name != "Acme" || p.brand.LogoURL != "" || strings.Contains(string(p.assets["theme.css"].body), "display") {
		t.Fatalf("fallback brand %+v, theme %s", p.brand, p.assets["theme.css"].body)
	}
	if (Config{PublicBaseURL: "share.example.com"}).Validate() == nil {
		t.Fatal("Validate accepted a relative public URL")
	}
}

func TestWords(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0: "1 second", 1500 * time.Millisecond: "2 seconds", 59 * time.Second: "59 seconds", 61 * time.Second: "1 minute",
		15 * time.Minute: "15 minutes", 50 * time.Minute: "50 minutes", 3 * time.Hour: "3 hours",
	} {
		if got := waitWords(d); got != want {
			t.Errorf("waitWords(%s) = %q, want %q", d, got, want)
		}
	}
	ts := []link.Target{{Type: "file"}, {Type: "folder"}, {Type: "file"}}
	if got := contents(ts); got != "2 files and 1 folder" {
		t.Errorf("contents %q", got)
	}
	if got := contents(ts[1:2]); got != "1 folder" {
		t.Errorf("contents %q", got)
	}
	if got := heading(link.Link{Title: "  Q3 \n plan ", Targets: ts}); got != "Q3 plan" {
		t.Errorf("heading %q", got)
	}
	if got := heading(link.Link{Targets: ts[:1]}); got != "A file was shared with you" {
		t.Errorf("heading %q", got)
	}
}
