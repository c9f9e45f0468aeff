// Package link is the domain of share links: what a link is, its statuses,
// and the validation of what owners ask for. It has no I/O.
package link

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"

	"github.com/sharelinks/sharelinks/internal/apperr"
)

// Statuses a link can be in. Only active links open.
const (
	StatusActive    = "active"
	StatusExpired   = "expired"
	StatusExhausted = "exhausted"
	StatusRevoked   = "revoked"
)

// Authenticator types. AuthNone is an open link.
const (
	AuthNone     = "none"
	AuthPassword = "password"
	AuthEmailOTP = "email_otp"
	AuthSMSOTP   = "sms_otp"
)

// Limits from the API contract.
const (
	MaxSpecs       = 100
	MaxTargets     = 100
	MaxTitle       = 200
	MaxMessage     = 2000
	MinPassword    = 8
	MaxPassword    = 1024
	MaxTargetID    = 500
	MaxTargetName  = 500
	MaxTargetURL   = 4096
	MaxAuthContext = 320
)

// Target is one file or folder the link gives access to. The service never
// touches the content; URL is where a recipient is sent with a grant.
type Target struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
	URL  string `json:"url,omitempty"`
}

// AuthSpec is one authenticator as the owner sends it.
type AuthSpec struct {
	AuthType    string `json:"auth_type"`
	AuthContext string `json:"auth_context"`
}

// Spec is what an owner asks for; one link is created per authenticator.
type Spec struct {
	Targets        []Target   `json:"targets"`
	LinkType       string     `json:"link_type"`
	ExpiresAt      *time.Time `json:"expires_at"`
	MaxAccessCount *int       `json:"max_access_count"`
	Authenticators []AuthSpec `json:"authenticators"`
	Title          string     `json:"title"`
	Message        string     `json:"message"`
	Notify         bool       `json:"notify"`
	// AllowedNetworks limits recipients to these networks (CIDR prefixes
	// or addresses); absent: any network.
	AllowedNetworks []string `json:"allowed_networks"`
	// Tags are the owner's labels, to list and revoke links by.
	Tags []string `json:"tags"`
	// NotBefore is when the link opens to recipients; absent: at once.
	NotBefore *time.Time `json:"not_before"`
	// OTPPolicy sets how the codes of the spec's email_otp and sms_otp
	// links work; absent fields take the operator's defaults.
	OTPPolicy *OTPPolicySpec `json:"otp_policy"`
}

// Policy is the configurable part of validation.
type Policy struct {
	MaxExpiry time.Duration // how far ahead expires_at may be
	// DefaultExpiry is how far ahead a link without expires_at expires
	// (0: expires_at is required).
	DefaultExpiry time.Duration
	// MaxAccessCount, when set, is the most accesses any link may allow:
	// a link without a limit gets it, one above it is refused (operators
	// who must enforce download limits; 0: no such rule).
	MaxAccessCount   int
	ForbidOpenLinks  bool
	DefaultPhoneZone string // region for numbers without +, e.g. "US"; empty requires E.164 input
	// SMSRegions are the regions (ISO 3166-1 alpha-2, as ParseRegions
	// returns them) whose numbers codes and notifications may be texted to;
	// empty allows any. Texts to some ranges cost many times others, which
	// is what SMS pumping lives on (OWASP API4:2023).
	SMSRegions []string
}

// SMSAllowed checks that the policy lets texts go to phone (E.164); the
// error names the number's region and the allowed ones.
func (p Policy) SMSAllowed(phone string) error {
	if len(p.SMSRegions) == 0 {
		return nil
	}
	region := "unknown"
	if num, err := phonenumbers.Parse(phone, ""); err == nil {
		if r := phonenumbers.GetRegionCodeForNumber(num); r != "" {
			region = r
		}
	}
	if slices.Contains(p.SMSRegions, region) {
		return nil
	}
	return fmt.Errorf("texts to numbers in region %s are not allowed here (allowed: %s)", region, strings.Join(p.SMSRegions, ", "))
}

// ParseRegions reads a comma-separated list of regions (US,ca, GB) into
// upper-case ISO 3166-1 alpha-2 codes that libphonenumber knows.
func ParseRegions(s string) ([]string, error) {
	var out []string
	for r := range strings.SplitSeq(s, ",") {
		r = strings.ToUpper(strings.TrimSpace(r))
		if r == "" {
			continue
		}
		if !phonenumbers.GetSupportedRegions()[r] {
			return nil, fmt.Errorf("%q is not a region with phone numbers (use ISO 3166-1 alpha-2 codes, like US or GB)", r)
		}
		out = append(out, r)
	}
	return out, nil
}

// Auth is a validated authenticator: Recipient is the normalised email
// (lowercased) or E.164 phone; Password is the clear password to hash.
type Auth struct {
	Type      string
	Recipient string
	Password  string
}

// Validated is a spec that passed validation, expanded per authenticator.
type Validated struct {
	Spec     Spec
	Auths    []Auth
	Networks []netip.Prefix
	Tags     []string
	OTP      *OTPPolicy // what the owner set; nil: the defaults
}

// Validate checks one spec; field paths are prefixed with prefix (e.g. "links[3]").
func (s Spec) Validate(prefix string, now time.Time, p Policy) (Validated, error) {
	f := func(name string) string { return prefix + "." + name }
	if len(s.Targets) == 0 {
		return Validated{}, apperr.Field(f("targets"), "invalid_targets", "at least one target is required")
	}
	if len(s.Targets) > MaxTargets {
		return Validated{}, apperr.Field(f("targets"), "invalid_targets", "at most %d targets per link", MaxTargets)
	}
	allFolders := true
	seen := make(map[string]bool, len(s.Targets))
	for i, t := range s.Targets {
		tf := fmt.Sprintf("%s[%d]", f("targets"), i)
		if t.ID == "" || len(t.ID) > MaxTargetID || !IsText(t.ID) {
			return Validated{}, apperr.Field(tf+".id", "invalid_target", "target id is required, at most %d bytes of text", MaxTargetID)
		}
		if seen[t.ID] {
			return Validated{}, apperr.Field(tf+".id", "invalid_target", "duplicate target id")
		}
		seen[t.ID] = true
		switch t.Type {
		case "file":
			allFolders = false
		case "folder":
		default:
			return Validated{}, apperr.Field(tf+".type", "invalid_target", "target type must be file or folder")
		}
		if len(t.Name) > MaxTargetName || !IsText(t.Name) {
			return Validated{}, apperr.Field(tf+".name", "invalid_target", "target name at most %d bytes of text", MaxTargetName)
		}
		if t.URL != "" {
			u, err := url.Parse(t.URL)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(t.URL) > MaxTargetURL {
				return Validated{}, apperr.Field(tf+".url", "invalid_target", "target url must be an absolute http(s) URL")
			}
		}
	}
	switch s.LinkType {
	case "view", "download", "editor":
	case "upload":
		if !allFolders {
			return Validated{}, apperr.Field(f("link_type"), "invalid_link_type", "upload links need every target to be a folder")
		}
	case "":
		return Validated{}, apperr.Field(f("link_type"), "invalid_link_type", "link_type is required (view, download, upload or editor)")
	default:
		return Validated{}, apperr.Field(f("link_type"), "invalid_link_type", "link_type must be view, download, upload or editor")
	}
	if s.ExpiresAt == nil && p.DefaultExpiry > 0 {
		t := now.Add(p.DefaultExpiry).UTC().Truncate(time.Second)
		s.ExpiresAt = &t
	}
	if s.ExpiresAt == nil {
		return Validated{}, apperr.Field(f("expires_at"), "invalid_expires_at", "expires_at is required (RFC 3339)")
	}
	if err := checkExpiry(f("expires_at"), *s.ExpiresAt, now, p); err != nil {
		return Validated{}, err
	}
	if s.MaxAccessCount == nil && p.MaxAccessCount > 0 {
		s.MaxAccessCount = &p.MaxAccessCount
	}
	if err := p.checkMax(f("max_access_count"), s.MaxAccessCount); err != nil {
		return Validated{}, err
	}
	if err := checkNotBefore(f("not_before"), s.NotBefore, *s.ExpiresAt); err != nil {
		return Validated{}, err
	}
	if err := checkTexts(f, s.Title, s.Message); err != nil {
		return Validated{}, err
	}
	networks, err := parseNetworks(f("allowed_networks"), s.AllowedNetworks)
	if err != nil {
		return Validated{}, err
	}
	tags, err := parseTags(f("tags"), s.Tags)
	if err != nil {
		return Validated{}, err
	}
	otp, err := s.OTPPolicy.validate(f("otp_policy"))
	if err != nil {
		return Validated{}, err
	}
	v := Validated{Spec: s, Networks: networks, Tags: tags, OTP: otp}
	if s.OTPPolicy != nil && !slices.ContainsFunc(s.Authenticators, func(a AuthSpec) bool { return IsOTP(a.AuthType) }) {
		return Validated{}, apperr.Field(f("otp_policy"), "otp_policy_not_applicable",
			"otp_policy applies to email_otp and sms_otp authenticators, and this spec has none")
	}
	if len(s.Authenticators) == 0 {
		if p.ForbidOpenLinks {
			return Validated{}, apperr.Field(f("authenticators"), "open_links_forbidden", "links without an authenticator are not allowed here")
		}
		v.Auths = []Auth{{Type: AuthNone}}
		return v, nil
	}
	for i, a := range s.Authenticators {
		af := fmt.Sprintf("%s[%d]", f("authenticators"), i)
		auth, err := validateAuth(af, a, p)
		if err != nil {
			return Validated{}, err
		}
		v.Auths = append(v.Auths, auth)
	}
	return v, nil
}

func validateAuth(field string, a AuthSpec, p Policy) (Auth, error) {
	switch a.AuthType {
	case AuthPassword:
		n := utf8.RuneCountInString(a.AuthContext)
		if n < MinPassword || len(a.AuthContext) > MaxPassword {
			return Auth{}, apperr.Field(field+".auth_context", "invalid_password", "password must be %d to %d characters", MinPassword, MaxPassword)
		}
		return Auth{Type: AuthPassword, Password: a.AuthContext}, nil
	case AuthEmailOTP:
		e, err := NormalizeEmail(a.AuthContext)
		if err != nil {
			return Auth{}, apperr.Field(field+".auth_context", "invalid_email", "%s", err.Error())
		}
		return Auth{Type: AuthEmailOTP, Recipient: e}, nil
	case AuthSMSOTP:
		ph, err := NormalizePhone(a.AuthContext, p.DefaultPhoneZone)
		if err != nil {
			return Auth{}, apperr.Field(field+".auth_context", "invalid_phone", "%s", err.Error())
		}
		if err := p.SMSAllowed(ph); err != nil {
			return Auth{}, apperr.Field(field+".auth_context", "sms_region_not_allowed", "%s", err.Error())
		}
		return Auth{Type: AuthSMSOTP, Recipient: ph}, nil
	default:
		return Auth{}, apperr.Field(field+".auth_type", "invalid_auth_type", "auth_type must be password, email_otp or sms_otp")
	}
}

// NormalizeEmail accepts exactly one bare address (no display name, no
// CR/LF, no comments) and returns it with the domain lowercased.
func NormalizeEmail(s string) (string, error) {
	if s == "" || len(s) > MaxAuthContext || strings.ContainsAny(s, "\r\n\x00") {
		return "", fmt.Errorf("a single email address is required")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", fmt.Errorf("%q is not a single bare email address", s)
	}
	at := strings.LastIndexByte(a.Address, '@')
	local, domain := a.Address[:at], strings.ToLower(a.Address[at+1:])
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return "", fmt.Errorf("%q has no valid domain", s)
	}
	return local + "@" + domain, nil
}

// NormalizePhone parses a phone number with libphonenumber's rules and
// returns it in E.164. Without a default region the input must start with +.
func NormalizePhone(s, region string) (string, error) {
	if s == "" || len(s) > 64 {
		return "", fmt.Errorf("a phone number is required")
	}
	num, err := phonenumbers.Parse(s, region)
	if err != nil {
		return "", fmt.Errorf("%q is not a phone number (use E.164, e.g. +14155550123)", s)
	}
	if !phonenumbers.IsValidNumber(num) {
		return "", fmt.Errorf("%q is not a valid phone number", s)
	}
	return phonenumbers.Format(num, phonenumbers.E164), nil
}

// MaskEmail shows the first character of the local part and the domain:
// j***@example.com.
func MaskEmail(e string) string {
	at := strings.LastIndexByte(e, '@')
	if at <= 0 {
		return "***"
	}
	r, _ := utf8.DecodeRuneInString(e)
	return string(r) + "***" + e[at:]
}

// MaskPhone keeps the country code and the last four digits: +1******4567.
func MaskPhone(p string) string {
	num, err := phonenumbers.Parse(p, "")
	if err != nil || len(p) < 6 {
		return "***"
	}
	cc := fmt.Sprintf("+%d", num.GetCountryCode())
	rest := len(p) - len(cc) - 4
	if rest < 0 {
		return "***"
	}
	return cc + strings.Repeat("*", rest) + p[len(p)-4:]
}

// MaskRecipient masks a recipient of the given authenticator type.
func MaskRecipient(authType, recipient string) string {
	switch authType {
	case AuthEmailOTP:
		return MaskEmail(recipient)
	case AuthSMSOTP:
		return MaskPhone(recipient)
	}
	return ""
}

// EffectiveStatus is the status a reader sees: an active link past its
// expiry is expired even before the reaper has marked it.
func EffectiveStatus(stored string, expiresAt, now time.Time) string {
	if stored == StatusActive && !expiresAt.After(now) {
		return StatusExpired
	}
	return stored
}

// days writes a duration in days when it is whole days ("365 days").
func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// IsText reports whether s can be stored as Postgres text: valid UTF-8
// without NUL. JSON can carry a NUL ("\u0000") and a URL any byte; Postgres
// refuses both, so they are caught here as bad input, not there as a 500.
func IsText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// checkExpiry: an expiry is in the future and at most the policy's
// MaxExpiry ahead (on create and on change alike).
func checkExpiry(field string, t, now time.Time, p Policy) error {
	if !t.After(now) {
		return apperr.Field(field, "invalid_expires_at", "expires_at must be in the future")
	}
	if t.Sub(now) > p.MaxExpiry {
		return apperr.Field(field, "invalid_expires_at", "expires_at at most %s ahead", days(p.MaxExpiry))
	}
	return nil
}

// checkMax: an access limit is at least 1, and within the policy's
// MaxAccessCount when there is one; nil is no limit, which such a policy
// does not allow.
func (p Policy) checkMax(field string, max *int) error {
	switch {
	case max != nil && *max < 1:
		return apperr.Field(field, "invalid_max_access_count", "max_access_count must be at least 1, or absent (null) for no limit")
	case p.MaxAccessCount > 0 && (max == nil || *max > p.MaxAccessCount):
		return apperr.Field(field, "max_access_count_too_high", "this service allows at most %d accesses per link", p.MaxAccessCount)
	}
	return nil
}

// checkNotBefore checks a start time against the expiry it must precede.
// A time already past is allowed (the link is open at once).
func checkNotBefore(field string, notBefore *time.Time, expires time.Time) error {
	if notBefore != nil && !notBefore.Before(expires) {
		return apperr.Field(field, "invalid_not_before", "not_before must be before expires_at")
	}
	return nil
}

// utcOrNil is t in UTC, or nil.
func utcOrNil(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// checkTexts checks a title and a message, their fields named by f.
func checkTexts(f func(string) string, title, message string) error {
	if utf8.RuneCountInString(title) > MaxTitle || !IsText(title) {
		return apperr.Field(f("title"), "invalid_title", "title at most %d characters of text", MaxTitle)
	}
	if utf8.RuneCountInString(message) > MaxMessage || !IsText(message) {
		return apperr.Field(f("message"), "invalid_message", "message at most %d characters of text", MaxMessage)
	}
	return nil
}
