package link_test

import (
	"slices"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
)

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"jane@Example.COM":     "jane@example.com",
		"Jane.Doe+x@mail.test": "Jane.Doe+x@mail.test",
	} {
		got, err := link.NormalizeEmail(in)
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "jane", "Jane <jane@example.com>", "a@b.c, d@e.f", "jane@example.com\r\nBcc: x@y.z",
		"jane@localhost", "<jane@example.com>", "jane@example.com (comment)", "jane@.com"} {
		if got, err := link.NormalizeEmail(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

func TestNormalizePhone(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"+1 (415) 555-0123": "+14155550123",
		"+44 20 7183 8750":  "+442071838750",
		"+33612345678":      "+33612345678",
	} {
		got, err := link.NormalizePhone(in, "")
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	if got, err := link.NormalizePhone("(415) 555-0123", "US"); err != nil || got != "+14155550123" {
		t.Errorf("national number with region: %q %v", got, err)
	}
	for _, bad := range []string{"", "4155550123", "+1 555", "+999 123456789", "not a number", "+1415555012345678"} {
		if got, err := link.NormalizePhone(bad, ""); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

func TestMasks(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		link.MaskEmail("john@example.com"): "j***@example.com",
		link.MaskPhone("+14155554567"):     "+1******4567",
		link.MaskPhone("+442071838750"):    "+44******8750",
		link.MaskEmail("nonsense"):         "***",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	in := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	one, zero := 1, 0
	base := func() link.Spec {
		return link.Spec{Targets: []link.Target{{ID: "a", Type: "folder"}}, LinkType: "upload", ExpiresAt: in(time.Hour)}
	}
	p := link.Policy{MaxExpiry: 24 * time.Hour}
	cases := []struct {
		name  string
		mod   func(*link.Spec)
		pol   link.Policy
		field string
	}{
		{"valid upload on folders", func(*link.Spec) {}, p, ""},
		{"upload on a file", func(s *link.Spec) { s.Targets = append(s.Targets, link.Target{ID: "b", Type: "file"}) }, p, "x.link_type"},
		{"no targets", func(s *link.Spec) { s.Targets = nil }, p, "x.targets"},
		{"duplicate target", func(s *link.Spec) { s.Targets = append(s.Targets, s.Targets[0]) }, p, "x.targets[1].id"},
		{"bad target type", func(s *link.Spec) { s.Targets[0].Type = "disk" }, p, "x.targets[0].type"},
		{"past", func(s *link.Spec) { s.ExpiresAt = in(-time.Second) }, p, "x.expires_at"},
		{"too far", func(s *link.Spec) { s.ExpiresAt = in(25 * time.Hour) }, p, "x.expires_at"},
		{"missing expiry", func(s *link.Spec) { s.ExpiresAt = nil }, p, "x.expires_at"},
		{"max 0", func(s *link.Spec) { s.MaxAccessCount = &zero }, p, "x.max_access_count"},
		{"max 1", func(s *link.Spec) { s.MaxAccessCount = &one }, p, ""},
		{"open forbidden", func(*link.Spec) {}, link.Policy{MaxExpiry: time.Hour * 24, ForbidOpenLinks: true}, "x.authenticators"},
		{"title 201", func(s *link.Spec) { s.Title = string(make([]rune, 201)) }, p, "x.title"},
		{"unknown auth", func(s *link.Spec) { s.Authenticators = []link.AuthSpec{{AuthType: "magic"}} }, p, "x.authenticators[0].auth_type"},
	}
	for _, c := range cases {
		s := base()
		c.mod(&s)
		v, err := s.Validate("x", now, c.pol)
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if len(v.Auths) != 1 || v.Auths[0].Type != link.AuthNone {
				t.Errorf("%s: auths %+v", c.name, v.Auths)
			}
			continue
		}
		e, ok := apperr.As(err)
		if !ok || e.Code != apperr.Invalid || e.Field != c.field {
			t.Errorf("%s: %v, want invalid %s", c.name, err, c.field)
		}
	}
}

func TestEffectiveStatus(t *testing.T) {
	t.Parallel()
	now := time.Now()
	if s := link.EffectiveStatus(link.StatusActive, now, now); s != link.StatusExpired {
		t.Errorf("active at its expiry: %s", s)
	}
	if s := link.EffectiveStatus(link.StatusActive, now.Add(time.Second), now); s != link.StatusActive {
		t.Errorf("active before expiry: %s", s)
	}
	if s := link.EffectiveStatus(link.StatusRevoked, now.Add(time.Hour), now); s != link.StatusRevoked {
		t.Errorf("revoked: %s", s)
	}
}

func TestSMSRegions(t *testing.T) {
	if _, err := link.ParseRegions("US,XX"); err == nil {
		t.Error("XX accepted as a region")
	}
	regions, err := link.ParseRegions(" us, GB ,,ca")
	if err != nil || !slices.Equal(regions, []string{"US", "GB", "CA"}) {
		t.Fatalf("ParseRegions: %v %v", regions, err)
	}
	if r, err := link.ParseRegions(""); err != nil || len(r) != 0 {
		t.Fatalf("empty: %v %v", r, err)
	}
	p := link.Policy{SMSRegions: regions}
	for phone, ok := range map[string]bool{
		"+14155550123":  true,  // US
		"+16135550123":  true,  // CA (Ottawa): +1 is shared, the region is the number's own
		"+442079460958": true,  // GB
		"+18095550123":  false, // DO: +1 again, but not an allowed region
		"+33142685300":  false, // FR
		"+882345678901": false, // an international network: no region at all
	} {
		err := p.SMSAllowed(phone)
		if (err == nil) != ok {
			t.Errorf("%s: %v, want allowed %v", phone, err, ok)
		}
	}
	if err := (link.Policy{}).SMSAllowed("+33142685300"); err != nil {
		t.Errorf("no regions set must allow any: %v", err)
	}
}
