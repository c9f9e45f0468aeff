package httpapi_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

func withTags(tags ...string) func(map[string]any) {
	return func(s map[string]any) { s["tags"] = tags }
}

// Owners label links with tags, list them by tag and revoke them by tag,
// their own only.
func TestTagsListAndRevokeLinks(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	other := st.OwnerKey(t, "other-"+t.Name())
	for _, tc := range []struct {
		tags        []string
		field, code string
	}{
		{[]string{"legal", " padded"}, "links[0].tags[1]", "invalid_tag"},
		{[]string{""}, "links[0].tags[0]", "invalid_tag"},
		{[]string{strings.Repeat("t", 65)}, "links[0].tags[0]", "invalid_tag"},
		{[]string{"a\u0000"}, "links[0].tags[0]", "invalid_tag"},
		{slices.Repeat([]string{"t"}, 21), "links[0].tags", "invalid_tags"},
	} {
		r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{spec(withTags(tc.tags...))}})
		var e struct{ Error struct{ Code, Field string } }
		r.JSON(t, &e)
		if r.Status != 400 || e.Error.Code != tc.code || e.Error.Field != tc.field {
			t.Errorf("tags %.30q: %d %s", tc.tags, r.Status, r.Body)
		}
	}
	ls := create(t, st, key, spec(withTags("legal", "q3", "legal")), spec(withTags("legal")), spec())
	theirs := create(t, st, other, spec(withTags("legal")))[0]
	var v struct{ Tags []string }
	st.Do(t, "GET", "/v1/links/"+ls[0].ID, key, nil).JSON(t, &v)
	if !slices.Equal(v.Tags, []string{"legal", "q3"}) {
		t.Errorf("tags %v, want [legal q3] (the repeat dropped)", v.Tags)
	}
	st.Do(t, "GET", "/v1/links/"+ls[2].ID, key, nil).JSON(t, &v)
	if v.Tags == nil || len(v.Tags) != 0 {
		t.Errorf("an untagged link lists tags %v, want []", v.Tags)
	}
	ids := func(query string) []string {
		t.Helper()
		var page struct {
			Links []linkResp
			Count int
		}
		st.Do(t, "GET", "/v1/links?"+query, key, nil).JSON(t, &page)
		var out []string
		for _, l := range page.Links {
			out = append(out, l.ID)
		}
		slices.Sort(out)
		if page.Count != len(out) {
			t.Errorf("%s: count %d, %d links", query, page.Count, len(out))
		}
		return out
	}
	both := []string{ls[0].ID, ls[1].ID}
	slices.Sort(both)
	if got := ids("tag=legal"); !slices.Equal(got, both) {
		t.Errorf("tag=legal: %v, want %v", got, both)
	}
	if got := ids("tag=q3"); !slices.Equal(got, []string{ls[0].ID}) {
		t.Errorf("tag=q3: %v", got)
	}
	if got := ids("tag=Legal"); len(got) != 0 {
		t.Errorf("tags match exactly; tag=Legal found %v", got)
	}

	for _, body := range []map[string]any{
		{"tag": "legal", "ids": []string{ls[0].ID}},
		{"tag": "legal", "target_id": "report.pdf"},
	} {
		if r := st.Do(t, "POST", "/v1/links/revoke", key, body); r.Status != 400 || r.ErrorCode() != "invalid_revoke" {
			t.Errorf("revoke %v: %d %s", body, r.Status, r.Body)
		}
	}
	if r := st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"tag": " legal"}); r.Status != 400 || r.ErrorCode() != "invalid_tag" {
		t.Errorf("revoke by a malformed tag: %d %s", r.Status, r.Body)
	}
	r := st.Do(t, "POST", "/v1/links/revoke", key, map[string]any{"tag": "legal"})
	var out struct{ Revoked []string }
	r.JSON(t, &out)
	slices.Sort(out.Revoked)
	if r.Status != 200 || !slices.Equal(out.Revoked, both) {
		t.Fatalf("revoke by tag: %d %s, want %v", r.Status, r.Body, both)
	}
	if got := ids("tag=legal&status=active"); len(got) != 0 {
		t.Errorf("active legal links after the revoke: %v", got)
	}
	var still linkResp
	st.Do(t, "GET", "/v1/links/"+theirs.ID, other, nil).JSON(t, &still)
	if still.Status != "active" {
		t.Errorf("another owner's link with the same tag: %s", still.Status)
	}
	st.Do(t, "GET", "/v1/links/"+ls[2].ID, key, nil).JSON(t, &still)
	if still.Status != "active" {
		t.Errorf("the untagged link: %s", still.Status)
	}

	// Tags change with PATCH, all at once.
	if r := patch(t, st, key, ls[2].ID, map[string]any{"tags": []string{"x", "y"}}); r.Status != 200 {
		t.Fatalf("tag by patch: %d %s", r.Status, r.Body)
	}
	if got := ids("tag=y"); !slices.Equal(got, []string{ls[2].ID}) {
		t.Errorf("tag=y after the patch: %v", got)
	}
	if r := patch(t, st, key, ls[2].ID, map[string]any{"tags": []string{}}); r.Status != 200 || !strings.Contains(string(r.Body), `"tags":[]`) {
		t.Fatalf("untag by patch: %d %s", r.Status, r.Body)
	}
	if got := ids("tag=y"); len(got) != 0 {
		t.Errorf("tag=y after untagging: %v", got)
	}
}

// Every active link made for one recipient is revoked in one call (they
// left; the number changed hands), the address given in any form the
// create accepts; other recipients' and other owners' links stay.
func TestRevokeEveryLinkOfARecipient(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	other := st.OwnerKey(t, "other-"+t.Name())
	to := func(auth, addr string) map[string]any {
		return spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": auth, "auth_context": addr}}
		})
	}
	ls := create(t, st, key, to("email_otp", "ann@example.com"), to("email_otp", "ann@example.com"),
		to("email_otp", "bob@example.com"), to("sms_otp", "+442071838750"))
	theirs := create(t, st, other, to("email_otp", "ann@example.com"))[0]
	revoke := func(body map[string]any) ([]string, testkit.Response) {
		t.Helper()
		r := st.Do(t, "POST", "/v1/links/revoke", key, body)
		var out struct{ Revoked []string }
		if r.Status == 200 {
			r.JSON(t, &out)
		}
		slices.Sort(out.Revoked)
		return out.Revoked, r
	}
	want := []string{ls[0].ID, ls[1].ID}
	slices.Sort(want)
	if got, r := revoke(map[string]any{"recipient": "ann@example.com"}); r.Status != 200 || !slices.Equal(got, want) {
		t.Fatalf("revoke ann's: %d %s, want %v", r.Status, r.Body, want)
	}
	if got, r := revoke(map[string]any{"recipient": "+44 20 7183 8750"}); r.Status != 200 || !slices.Equal(got, []string{ls[3].ID}) {
		t.Fatalf("revoke the number's: %d %s", r.Status, r.Body)
	}
	if _, r := revoke(map[string]any{"recipient": "not an address"}); r.Status != 400 || r.ErrorCode() != "invalid_recipient" {
		t.Errorf("a malformed recipient: %d %s", r.Status, r.Body)
	}
	if _, r := revoke(map[string]any{"recipient": "ann@example.com", "tag": "x"}); r.Status != 400 || r.ErrorCode() != "invalid_revoke" {
		t.Errorf("recipient and tag: %d %s", r.Status, r.Body)
	}
	for _, l := range []struct {
		key, id string
	}{{key, ls[2].ID}, {other, theirs.ID}} {
		var v linkResp
		st.Do(t, "GET", "/v1/links/"+l.id, l.key, nil).JSON(t, &v)
		if v.Status != "active" {
			t.Errorf("link %s: %s, want active", l.id, v.Status)
		}
	}
}
