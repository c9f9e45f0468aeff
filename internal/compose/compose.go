// Package compose builds the content of the messages sharelinks sends:
// link notifications and one-time codes, as email (subject, plain text and
// HTML) and as SMS.
//
// Owner-supplied text (sender name, title, message) is untrusted: the HTML is
// rendered with html/template so it is escaped for its context, and every
// single-line field is stripped of control characters so it cannot break a
// header or forge extra lines.
package compose

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net/url"
	"regexp"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"
)

// Brand defaults, used when the matching Brand field is empty.
const (
	DefaultBrandName   = "sharelinks"
	DefaultAccentColor = "#2563eb"
)

// Auth types a link can require, as in the link.created event.
const (
	AuthNone     = "none"
	AuthPassword = "password"
	AuthEmailOTP = "email_otp"
	AuthSMSOTP   = "sms_otp"
)

// ErrInvalid is wrapped by every error caused by bad input data (as opposed to
// a template bug), so callers can treat it as permanent.
var ErrInvalid = errors.New("compose: invalid input")

// hexColor accepts #rgb, #rgba, #rrggbb and #rrggbbaa. Anything else is refused
// because the colour is written into inline CSS.
var hexColor = regexp.MustCompile(`^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$`)

// Brand is the look of outgoing mail. The zero value is valid and means the
// defaults: name "sharelinks", no logo, accent "#2563eb".
type Brand struct {
	// Name is shown in the header (when there is no logo), the footer and SMS.
	Name string
	// LogoURL is an optional absolute http(s) URL of an image shown in the
	// header. It is the only external resource the emails reference.
	LogoURL string
	// AccentColor is a CSS hex colour used for the button and links.
	AccentColor string
}

// Validate reports whether the brand can be rendered; call it at start-up so
// a bad configuration fails fast rather than on every message.
func (b Brand) Validate() error {
	if b.AccentColor != "" && !hexColor.MatchString(b.AccentColor) {
		return fmt.Errorf("%w: accent colour %q is not a hex colour like #2563eb", ErrInvalid, b.AccentColor)
	}
	if b.LogoURL != "" {
		if err := checkHTTPURL(b.LogoURL); err != nil {
			return fmt.Errorf("logo URL: %w", err)
		}
	}
	if strings.ContainsFunc(b.Name, unicode.IsControl) {
		return fmt.Errorf("%w: brand name contains control characters", ErrInvalid)
	}
	return nil
}

// withDefaults returns b with empty fields set to the defaults.
func (b Brand) withDefaults() Brand {
	if strings.TrimSpace(b.Name) == "" {
		b.Name = DefaultBrandName
	}
	if b.AccentColor == "" {
		b.AccentColor = DefaultAccentColor
	}
	return b
}

// NotificationData is what a link notification says.
type NotificationData struct {
	// SenderName is the owner's display name ("Acme Legal"); may be empty.
	SenderName string
	// Title is the link's title; when empty the subject is generic.
	Title string
	// Message is the owner's free-text note to the recipient; may span lines.
	Message string
	// URL is the recipient link (absolute http(s) URL).
	URL string
	// ExpiresAt is when the link expires; zero means it does not.
	ExpiresAt time.Time
	// OpensAt is when the link opens to recipients; zero (or past) is now.
	OpensAt time.Time
	// Now is the reference time for "expires in ..."; zero means time.Now().
	Now time.Time
	// AuthType is one of AuthNone, AuthPassword, AuthEmailOTP, AuthSMSOTP.
	AuthType string
	// Brand is the look of the email.
	Brand Brand
	// Reminder marks the second message to a recipient who has not opened
	// the link yet, sent shortly before it expires.
	Reminder bool
}

// OTPData is what a one-time-code email says.
type OTPData struct {
	// Code is the one-time code, shown in large digits.
	Code string
	// TTL is how long the code stays valid.
	TTL time.Duration
	// Host is the site the code is for (e.g. "share.example.com"); optional.
	Host string
	// Brand is the look of the email.
	Brand Brand
}

// notificationView is the data the notification templates see; all fields are
// already cleaned.
type notificationView struct {
	Subject      string
	Preheader    string
	Heading      string
	Sender       string
	Title        string
	MessageLines []string
	URL          string
	Expiry       string
	Opens        string
	Need         string
	Brand        Brand
	Reminder     bool
}

// otpView is the data the OTP templates see.
type otpView struct {
	Subject   string
	Preheader string
	Code      string
	Validity  string
	Host      string
	Brand     Brand
}

// Notification renders the email telling a recipient that a link was shared
// with them. Errors wrap ErrInvalid when the input cannot be rendered.
func Notification(d NotificationData) (subject, text, html string, err error) {
	if err := d.Brand.Validate(); err != nil {
		return "", "", "", err
	}
	if err := checkHTTPURL(d.URL); err != nil {
		return "", "", "", fmt.Errorf("link URL: %w", err)
	}
	need, err := authNeed(d.AuthType)
	if err != nil {
		return "", "", "", err
	}
	v := notificationView{
		Sender: singleLine(d.SenderName),
		Title:  singleLine(d.Title),
		URL:    d.URL,
		Expiry: expiryWords(d.ExpiresAt, d.Now),
		Opens:  opensWords(d.OpensAt, d.Now),
		Need:   need,
		Brand:  d.Brand.withDefaults(),
	}
	v.Brand.Name = singleLine(v.Brand.Name)
	if v.Sender == "" {
		v.Sender = "Someone"
	}
	v.Heading = v.Title
	if v.Heading == "" {
		v.Heading = v.Sender + " shared something with you"
	}
	v.Subject = v.Heading
	v.Preheader = v.Sender + " shared a link with you"
	if d.Reminder {
		v.Reminder = true
		v.Subject = "Reminder: " + v.Heading
		v.Preheader = "You have not opened the link " + v.Sender + " shared with you yet"
	}
	if v.Opens != "" {
		v.Preheader += "; it opens " + v.Opens
	} else if v.Expiry != "" {
		v.Preheader += "; it " + v.Expiry
	}
	if msg := multiLine(d.Message); msg != "" {
		v.MessageLines = strings.Split(msg, "\n")
	}

	text, err = renderText(notificationText, v)
	if err != nil {
		return "", "", "", err
	}
	html, err = renderHTML(notificationHTML, v)
	if err != nil {
		return "", "", "", err
	}
	return v.Subject, text, html, nil
}

// OTPEmail renders the email carrying a one-time code.
func OTPEmail(d OTPData) (subject, text, html string, err error) {
	if err := d.Brand.Validate(); err != nil {
		return "", "", "", err
	}
	code := strings.TrimSpace(d.Code)
	if code == "" || strings.ContainsFunc(code, func(r rune) bool { return !isCodeRune(r) }) {
		return "", "", "", fmt.Errorf("%w: code must be non-empty letters and digits", ErrInvalid)
	}
	if d.TTL <= 0 {
		return "", "", "", fmt.Errorf("%w: code TTL must be positive", ErrInvalid)
	}
	v := otpView{
		Code:     code,
		Validity: Humanize(d.TTL),
		Host:     singleLine(d.Host),
		Brand:    d.Brand.withDefaults(),
	}
	v.Brand.Name = singleLine(v.Brand.Name)
	v.Subject = fmt.Sprintf("Your %s code: %s", v.Brand.Name, code)
	v.Preheader = fmt.Sprintf("Your code is %s. It is valid for %s.", code, v.Validity)

	text, err = renderText(otpText, v)
	if err != nil {
		return "", "", "", err
	}
	html, err = renderHTML(otpHTML, v)
	if err != nil {
		return "", "", "", err
	}
	return v.Subject, text, html, nil
}

// NotificationSMS renders a short SMS for a link notification: who shared
// what, the link and, when known, the expiry. It stays in the GSM-7 alphabet
// for the parts we write (owner text is kept as given) and trims long titles
// so the common case fits in one or two segments.
func NotificationSMS(d NotificationData) string {
	brand := d.Brand.withDefaults()
	sender := truncate(singleLine(d.SenderName), 40)
	if sender == "" {
		sender = singleLine(brand.Name)
	}
	var b strings.Builder
	if d.Reminder {
		b.WriteString("Reminder: ")
	}
	if title := truncate(singleLine(d.Title), 60); title != "" {
		fmt.Fprintf(&b, "%s shared \"%s\" with you: %s", sender, title, d.URL)
	} else {
		fmt.Fprintf(&b, "%s shared a link with you: %s", sender, d.URL)
	}
	if opens := opensWords(d.OpensAt, d.Now); opens != "" {
		// "in 2 days, on ..." → "Opens in 2 days." as for the expiry below.
		words, _, _ := strings.Cut(opens, ",")
		b.WriteString("\nOpens " + words + ".")
	}
	if expiry := expiryWords(d.ExpiresAt, d.Now); expiry != "" && expiry != "has expired" {
		// "expires in 3 days, on ..." → "Expires in 3 days." keeps SMS short.
		words, _, _ := strings.Cut(expiry, ",")
		b.WriteString("\n" + strings.ToUpper(words[:1]) + words[1:] + ".")
	}
	return b.String()
}

// OTPSMS renders the SMS carrying a one-time code. Its last line is exactly
// "@HOST #CODE", the origin-bound one-time code format (WebOTP), so browsers on
// HOST can offer to fill the code in and other sites cannot. host may be a bare
// host name or a URL; any scheme, port and path are dropped.
func OTPSMS(code, host string, ttl time.Duration, brandName string) string {
	brandName = singleLine(brandName)
	if brandName == "" {
		brandName = DefaultBrandName
	}
	code = strings.TrimSpace(code)
	msg := fmt.Sprintf("Your %s code is %s. It expires in %s.", brandName, code, Humanize(ttl))
	if h := bareHost(host); h != "" {
		msg += fmt.Sprintf("\n\n@%s #%s", h, code)
	}
	return msg
}

// bareHost extracts the host name from "share.example.com",
// "share.example.com:8443" or "https://share.example.com/x".
func bareHost(host string) string {
	host = strings.TrimSpace(host)
	if host == "" {
		return ""
	}
	if !strings.Contains(host, "://") {
		host = "//" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// authNeed says what the recipient will need to open the link.
func authNeed(authType string) (string, error) {
	switch authType {
	case AuthNone, "":
		return "", nil
	case AuthEmailOTP:
		return "a one-time code we will send to this address", nil
	case AuthSMSOTP:
		return "a code sent to your phone", nil
	case AuthPassword:
		return "the password from the sender (they will tell you separately)", nil
	default:
		return "", fmt.Errorf("%w: unknown auth type %q", ErrInvalid, authType)
	}
}

// checkHTTPURL accepts only absolute http(s) URLs, the only kind that belongs
// in a button or an image in an email.
func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrInvalid, raw)
	}
	if strings.ContainsFunc(raw, unicode.IsControl) {
		return fmt.Errorf("%w: URL contains control characters", ErrInvalid)
	}
	return nil
}

// isCodeRune accepts the characters one-time codes are made of.
func isCodeRune(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z')
}

// singleLine collapses all whitespace (including line breaks) to single
// spaces and drops other control characters, so owner text used in a subject
// or a single line cannot inject headers or lines.
func singleLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// multiLine normalises line breaks to "\n", drops other control characters,
// trims trailing spaces on each line and collapses runs of blank lines.
func multiLine(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\u2028' || r == '\u2029' || r == '\r':
			return '\n'
		case r == '\t':
			return ' '
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, s)
	lines := strings.Split(s, "\n")
	out := make([]string, 0, len(lines))
	blank := false
	for _, l := range lines {
		l = strings.TrimRightFunc(l, unicode.IsSpace)
		if l == "" {
			if !blank && len(out) > 0 {
				out = append(out, "")
			}
			blank = true
			continue
		}
		blank = false
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// truncate shortens s to at most n runes, ending with "..." when cut (three
// dots rather than an ellipsis keeps SMS in the GSM-7 alphabet).
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimSpace(string(r[:n-3])) + "..."
}

// renderText executes a text template.
func renderText(t *texttemplate.Template, data any) (string, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("render text %s: %w", t.Name(), err)
	}
	return buf.String(), nil
}

// renderHTML executes an HTML template.
func renderHTML(t *htmltemplate.Template, data any) (string, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("render html %s: %w", t.Name(), err)
	}
	return buf.String(), nil
}
