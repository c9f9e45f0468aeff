package httpapi

import (
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/apperr"
)

func TestStrictKeys(t *testing.T) {
	cases := []struct {
		body   string
		reason string // "" when accepted
		field  string
	}{
		{`{"links":[{"title":"a","targets":[{"id":"x"},{"id":"y"}]}],"notify":true}`, "", ""},
		{`{"links":[{"id":"a"},{"id":"a"}]}`, "", ""}, // the same key in two objects is fine
		{`{"a":{"b":1},"b":2}`, "", ""},
		{`{"a":[[],{}],"b":[1,{"c":[]}]}`, "", ""},
		{`{"links":[],"links":[]}`, "duplicate_field", "links"},
		{`{"links":[{"title":"a","title":"b"}]}`, "duplicate_field", "title"},
		{`{"links":[{"targets":[{"id":"x","url":"u","id":"y"}]}]}`, "duplicate_field", "id"},
		{`{"Links":[]}`, "unknown_field", "Links"},
		{`{"lin\u212as":[]}`, "unknown_field", "lin\u212as"}, // Kelvin sign: encoding/json would match "links"
		{`{"expires-at":"x"}`, "unknown_field", "expires-at"},
		{`{"":1}`, "unknown_field", ""},
		{`{"a":1,`, "", ""}, // malformed: left to the decoder
		{`{"ids":[` + strings.Repeat(`"x",`, maxItems-1) + `"x"]}`, "", ""},
		{`{"ids":[` + strings.Repeat(`"x",`, maxItems) + `"x"]}`, "too_many_items", ""},
		{`[[` + strings.Repeat(`{},`, maxItems) + `{}]]`, "too_many_items", ""},
		{`[1,2]`, "", ""},
		{`"x"`, "", ""},
	}
	for _, c := range cases {
		err := strictKeys([]byte(c.body))
		if len(c.body) > 80 {
			c.body = c.body[:80] + "…"
		}
		e, _ := apperr.As(err)
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", c.body, err)
		case c.reason != "" && (e == nil || e.Reason != c.reason || e.Field != c.field):
			t.Errorf("%s: %v, want %s on %q", c.body, err, c.reason, c.field)
		}
	}
}

// BenchmarkStrictKeys is what the check adds to each JSON request: a
// one-link create body.
func BenchmarkStrictKeys(b *testing.B) {
	body := []byte(`{"links":[{"targets":[{"id":"report.pdf","type":"file","url":"https://storage.example.com/files/report.pdf"}],` +
		`"link_type":"view","expires_at":"2026-12-31T00:00:00Z","authenticators":[{"auth_type":"password","auth_context":"correct horse battery"}]}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := strictKeys(body); err != nil {
			b.Fatal(err)
		}
	}
}
