// Package web is the recipient's browser experience of a share link: the
// landing page at /s/{token}, the password and one-time-code forms, the list
// of shared items and the error pages. Pages are rendered on the server with
// html/template and work without JavaScript; a small script only adds a
// resend countdown and tidies the code input.
//
// Every page is sent with a strict Content-Security-Policy (scripts and styles
// only from /assets/, nothing inline), no referrer (the token is in the URL),
// no framing and no caching. Forms are protected against CSRF twice: Go's
// CrossOriginProtection (Sec-Fetch-Site / Origin) and a double-submit token
// in a cookie scoped to the link. Paths hold link tokens, so nothing here
// ever logs a URL.
package web

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/link"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CSRFCookie holds the double-submit token of the forms, scoped to one link.
const CSRFCookie = "sl_csrf"

// maxForm bounds a form body: a password and a token fit many times over.
const maxForm = 16 << 10

// Config is how the pages look and where they are served.
type Config struct {
	// PublicBaseURL is what link URLs start with; cookies are Secure when it
	// is https.
	PublicBaseURL string
	// Brand is the owner's look, shared with the emails (BRAND_NAME,
	// BRAND_LOGO_URL, BRAND_ACCENT). The zero value means the defaults.
	Brand compose.Brand
	// Log receives errors; it never gets a URL (they hold link tokens).
	Log *slog.Logger
	// Observer, when set, is told the result of each code request and code
	// check made through the pages, for the OTP metrics.
	Observer Observer
}

// Observer counts what recipients do through the pages. Results use the
// labels of sharelinks_otp_requests_total ("accepted", "throttled",
// "failed_send") and sharelinks_otp_verifications_total ("ok", "bad_code",
// "locked", "expired").
type Observer interface {
	OTPRequest(result string)
	OTPVerification(result string)
}

// Validate reports a configuration that cannot be served as asked; call it
// at start-up. New itself falls back to the default look instead of failing.
func (c Config) Validate() error {
	if err := c.Brand.Validate(); err != nil {
		return fmt.Errorf("brand: %w", err)
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("PUBLIC_BASE_URL %q is not an absolute http(s) URL", c.PublicBaseURL)
		}
	}
	return nil
}

// Pages renders the recipient pages. It implements httpapi.Pages.
type Pages struct {
	svc       *link.Service
	log       *slog.Logger
	obs       Observer
	brand     brandView
	secure    bool
	csp       string
	tmpl      map[string]*template.Template
	assets    map[string]asset
	assetURL  map[string]string
	crossSite *http.CrossOriginProtection
	now       func() time.Time
}

var _ httpapi.Pages = (*Pages)(nil)

// brandView is the brand as templates use it.
type brandView struct {
	Name    string
	LogoURL string
}

// New builds the pages. An invalid brand falls back to the default look
// (and is logged): a wrong colour must not take recipient links down.
func New(svc *link.Service, cfg Config) *Pages {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := cfg.Brand
	if err := b.Validate(); err != nil {
		log.Warn("web: invalid brand, using the default look", "err", err)
		if b = (compose.Brand{Name: b.Name}); b.Validate() != nil {
			b = compose.Brand{}
		}
	}
	if strings.TrimSpace(b.Name) == "" {
		b.Name = compose.DefaultBrandName
	}
	if b.AccentColor == "" {
		b.AccentColor = compose.DefaultAccentColor
	}
	p := &Pages{
		svc:    svc,
		log:    log,
		obs:    cfg.Observer,
		brand:  brandView{Name: strings.Join(strings.Fields(b.Name), " "), LogoURL: b.LogoURL},
		secure: strings.HasPrefix(cfg.PublicBaseURL, "https://"),
		now:    time.Now,
	}
	imgSrc := "'self'"
	if u, err := url.Parse(b.LogoURL); err == nil && b.LogoURL != "" {
		imgSrc += " " + u.Scheme + "://" + u.Host
	}
	p.csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src " + imgSrc +
		"; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	p.assets, p.assetURL = loadAssets(themeCSS(b.AccentColor))
	p.tmpl = parseTemplates()
	p.crossSite = http.NewCrossOriginProtection()
	p.crossSite.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.headers(w)
		p.render(w, r, http.StatusForbidden, "message", &view{
			DocTitle: "Request blocked",
			Heading:  "This request came from another site",
			Paragraphs: []string{"For your safety we only accept forms sent from this page. " +
				"Open the link you were sent again and try once more."},
		})
	}))
	return p
}

// Register adds the pages' routes: the form posts, the code and files
// pages, the open redirect and the static assets.
func (p *Pages) Register(mux *http.ServeMux) {
	post := func(h pageFunc) http.Handler { return p.crossSite.Handler(p.page(h)) }
	mux.Handle("POST /s/{token}/unlock", post(p.unlock))
	mux.Handle("POST /s/{token}/send-code", post(p.sendCode))
	mux.Handle("GET /s/{token}/code", p.page(p.codePage))
	mux.Handle("GET /s/{token}/files", p.page(p.filesPage))
	mux.Handle("GET /s/{token}/go", p.page(p.open))
	mux.HandleFunc("GET /assets/{file}", p.serveAsset)
}

// Landing renders GET /s/{token}. It always answers with a page (errors
// included), so it returns an error only if it could not write one.
func (p *Pages) Landing(w http.ResponseWriter, r *http.Request) error {
	p.page(p.landing).ServeHTTP(w, r)
	return nil
}

type pageFunc func(w http.ResponseWriter, r *http.Request) error

// page sets the headers every page needs and renders errors as pages: the
// one not-found page for every dead link, the lockout page, or a generic
// failure with the request id.
func (p *Pages) page(h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.headers(w)
		if err := h(w, r); err != nil {
			p.renderError(w, r, err)
		}
	})
}

func (p *Pages) headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", p.csp)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("X-Robots-Tag", "noindex, nofollow")
}

// renderError is the one place an error becomes a page.
func (p *Pages) renderError(w http.ResponseWriter, r *http.Request, err error) {
	e := httpapi.AsAppError(err)
	ok := e != nil
	switch {
	case ok && e.Code == apperr.Unavailable:
		httpapi.LogUnavailable(r.Context(), p.log, "recipient page: answered 503", "reason", e.Message, "err", err,
			"route", r.Pattern, "request_id", w.Header().Get("X-Request-Id"))
		w.Header().Set("Retry-After", fmt.Sprint(int((e.RetryAfter+time.Second-1)/time.Second)))
		p.render(w, r, http.StatusServiceUnavailable, "message", &view{
			DocTitle: "Briefly unavailable", Heading: "This page is briefly unavailable",
			Paragraphs: []string{"Nothing you did caused this. Please try again in a moment."},
		})
	case ok && e.Code == apperr.NotFound:
		p.render(w, r, http.StatusNotFound, "message", notFoundView())
	case ok && e.Reason == "link_not_yet_active":
		wait := max(e.RetryAfter, time.Second)
		w.Header().Set("Retry-After", fmt.Sprint(int((wait+time.Second-1)/time.Second)))
		at := p.now().Add(wait).UTC()
		p.render(w, r, http.StatusForbidden, "message", &view{
			DocTitle: "Not open yet", Heading: "This link is not open yet",
			Paragraphs: []string{
				"The person who shared it set it to open on " + at.Format("Monday 2 January 2006 at 15:04 MST") + ".",
				"Come back then and open the link again: it is " + waitWords(wait) + " from now.",
			},
		})
	case ok && e.Code == apperr.Forbidden:
		p.render(w, r, http.StatusForbidden, "message", &view{
			DocTitle: "Not available from here", Heading: "This link cannot be opened from your network",
			Paragraphs: []string{
				"The person who shared it allows it only from certain networks, such as their office's or a VPN's.",
				"Connect to one of those and open the link again, or ask them for access.",
			},
		})
	case ok && e.Code == apperr.TooMany:
		p.renderLocked(w, r, e.RetryAfter)
	case ok && e.Code == apperr.TooLarge:
		p.render(w, r, http.StatusRequestEntityTooLarge, "message", &view{
			DocTitle: "Too much data", Heading: "That was more than this form takes",
			Paragraphs: []string{"Go back and try again."},
		})
	case ok && (e.Code == apperr.Invalid || e.Code == apperr.Unsupported):
		// A request no form of ours sends (a mangled or hand-made body):
		// the sender's fault, and a 400, not an error on our side.
		p.render(w, r, http.StatusBadRequest, "message", &view{
			DocTitle: "Could not read that", Heading: "That form could not be read",
			Paragraphs: []string{"Go back, reload the page and try again."},
		})
	default:
		id := w.Header().Get("X-Request-Id")
		p.log.ErrorContext(r.Context(), "recipient page failed", "err", err, "route", r.Pattern, "request_id", id)
		p.render(w, r, http.StatusInternalServerError, "message", &view{
			DocTitle: "Something went wrong", Heading: "Something went wrong on our side",
			Paragraphs: []string{"Nothing you did caused this. Please try again in a moment."},
			Reference:  id,
		})
	}
}

// notFoundView is the single answer for unknown, expired, revoked and
// exhausted links: like the API, the page must not tell them apart.
func notFoundView() *view {
	return &view{
		DocTitle: "Link not available",
		Heading:  "This link is not available",
		Paragraphs: []string{
			"The link may have expired, been switched off by the person who shared it, or been used the maximum number of times. The address may also be incomplete.",
			"If you still need the files, ask the person who shared them to send you a new link.",
		},
	}
}

func (p *Pages) renderLocked(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	wait = max(wait, time.Second)
	w.Header().Set("Retry-After", fmt.Sprint(int((wait+time.Second-1)/time.Second)))
	at := p.now().Add(wait).UTC()
	p.render(w, r, http.StatusTooManyRequests, "message", &view{
		DocTitle: "Too many attempts",
		Heading:  "Too many attempts",
		Paragraphs: []string{
			"For your security, this link is locked after several wrong attempts.",
			"You can try again in " + waitWords(wait) + ", after " + at.Format("15:04 MST") + ".",
		},
	})
}

func (p *Pages) render(w http.ResponseWriter, r *http.Request, status int, name string, v *view) {
	v.Brand = p.brand
	v.Assets = p.assetURL
	t := p.tmpl[name]
	var buf strings.Builder
	if err := t.Execute(&buf, v); err != nil {
		p.log.ErrorContext(r.Context(), "render page", "page", name, "err", err, "route", r.Pattern)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

// redirect answers a form post (or a page that moved on) with 303 See Other.
func redirect(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// csrfToken returns the link's double-submit token, setting the cookie when
// the browser has none (or a malformed one).
func (p *Pages) csrfToken(w http.ResponseWriter, r *http.Request, token string) string {
	if c, err := r.Cookie(CSRFCookie); err == nil && validCSRF(c.Value) {
		return c.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	v := base64.RawURLEncoding.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{
		Name: CSRFCookie, Value: v, Path: tokenPath(token),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: p.secure,
	})
	return v
}

func validCSRF(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 32
}

// csrfOK checks the form's token against the cookie in constant time.
func csrfOK(r *http.Request) bool {
	c, err := r.Cookie(CSRFCookie)
	if err != nil || !validCSRF(c.Value) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("csrf"))) == 1
}

// parseForm reads a bounded urlencoded body.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return apperr.New(apperr.TooLarge, "body_too_large", "the form is larger than %d bytes", maxForm)
		}
		return apperr.New(apperr.Invalid, "invalid_form", "cannot read the form")
	}
	return nil
}

func (p *Pages) setAccessCookie(w http.ResponseWriter, token string, acc link.Access) {
	http.SetCookie(w, &http.Cookie{
		Name: httpapi.AccessCookie, Value: acc.Token, Path: tokenPath(token), MaxAge: int(acc.ExpiresIn / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: p.secure,
	})
}

func accessToken(r *http.Request) string {
	if c, err := r.Cookie(httpapi.AccessCookie); err == nil {
		return c.Value
	}
	return ""
}

func parseTemplates() map[string]*template.Template {
	funcs := template.FuncMap{"pathEscape": url.PathEscape}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	out := map[string]*template.Template{}
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, f := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, f))
	}
	return out
}

// tokenPath is the page's path for token as a URL carries it: the token
// comes decoded from the request path, and anything a real token never
// holds ("%", "?", "/") must stay escaped in redirects, links and cookie
// paths or the URL breaks.
func tokenPath(token string) string { return "/s/" + url.PathEscape(token) }
