package link_test

import (
	"encoding/json"
	"net/mail"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
)

// `make test` runs each target's seeds; `make fuzz` fuzzes them.

// An accepted email is one bare address without a line break (it goes into
// a mail header), and normalising it again changes nothing.
func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{"jane@Example.COM", "a@b.c", "Jane <jane@example.com>", "jane@example.com\r\nBcc: x@y.z",
		`"quoted local"@example.com`, "jane@ex\u00e4mple.com", "@", "a@b@c.d", "jane@example.com (c)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := link.NormalizeEmail(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(got, "\r\n\x00") {
			t.Fatalf("%q accepted as %q, which holds a line break or NUL", s, got)
		}
		if a, err := mail.ParseAddress(got); err != nil || a.Address != got || a.Name != "" {
			t.Fatalf("%q accepted as %q, which is not one bare address: %v", s, got, err)
		}
		if again, err := link.NormalizeEmail(got); err != nil || again != got {
			t.Fatalf("%q → %q → %q, %v: not stable", s, got, again, err)
		}
	})
}

// An accepted phone number is E.164 (+ and at most 15 digits), and
// normalising it again, with no default region, changes nothing.
func FuzzNormalizePhone(f *testing.F) {
	for _, s := range []string{"+14155550123", "(415) 555-0123", "+44 20 7946 0958", "0044 20 7946 0958", "+1", "++1", "+١٤١٥٥٥٥٠١٢٣"} {
		f.Add(s, "US")
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, s, region string) {
		got, err := link.NormalizePhone(s, region)
		if err != nil {
			return
		}
		if len(got) < 2 || len(got) > 16 || got[0] != '+' || strings.Trim(got[1:], "0123456789") != "" {
			t.Fatalf("%q (%q) accepted as %q, which is not E.164", s, region, got)
		}
		if again, err := link.NormalizePhone(got, ""); err != nil || again != got {
			t.Fatalf("%q → %q → %q, %v: not stable", s, got, again, err)
		}
	})
}

// Whatever an owner sends as a link spec, validation answers with a field
// error (a 400 at the edge) or a spec within every limit: never a panic,
// never an error of another kind (a 500).
func FuzzSpecValidate(f *testing.F) {
	for _, s := range []string{
		`{"targets":[{"id":"a","type":"file","url":"https://e.example/a"}],"link_type":"view","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"targets":[{"id":"d","type":"folder"}],"link_type":"upload","expires_at":"2030-01-01T00:00:00Z","max_access_count":0}`,
		`{"targets":[{"id":"a","type":"file"},{"id":"a","type":"file"}],"link_type":"view","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"targets":[{"id":"a","type":"file"}],"link_type":"view","expires_at":"2030-01-01T00:00:00Z",
			"authenticators":[{"auth_type":"sms_otp","auth_context":"+14155550123"},{"auth_type":"email_otp","auth_context":"x@y.z"},
			{"auth_type":"password","auth_context":"correct horse"}],"title":"T","message":"M"}`,
		`{"targets":[{"id":"\u0000","type":"file","url":"javascript:alert(1)"}],"link_type":"editor","expires_at":"1999-01-01T00:00:00Z"}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	policy := link.Policy{MaxExpiry: 365 * 24 * time.Hour, DefaultPhoneZone: "US"}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var s link.Spec
		if json.Unmarshal(raw, &s) != nil {
			return
		}
		v, err := s.Validate("links[0]", now, policy)
		if err != nil {
			if e, ok := apperr.As(err); !ok || e.Code != apperr.Invalid || e.Field == "" {
				t.Fatalf("%s: %v is not a field error", raw, err)
			}
			return
		}
		if len(v.Spec.Targets) == 0 || len(v.Spec.Targets) > link.MaxTargets || v.Spec.ExpiresAt == nil ||
			!v.Spec.ExpiresAt.After(now) || !utf8.ValidString(v.Spec.Title) || !utf8.ValidString(v.Spec.Message) {
			t.Fatalf("%s: accepted out of its limits: %+v", raw, v.Spec)
		}
		for _, a := range v.Auths {
			if strings.ContainsAny(a.Recipient, "\r\n\x00") {
				t.Fatalf("%s: recipient %q holds a line break or NUL", raw, a.Recipient)
			}
		}
	})
}
