package httpapi_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

func withNetworks(nets ...string) func(map[string]any) {
	return func(s map[string]any) { s["allowed_networks"] = nets }
}

// A link limited to networks serves recipients inside them and refuses
// everyone else on every recipient route, with a 403 that says why and
// without counting or recording anything; a session opened inside does
// not carry outside.
func TestLinksLimitedToNetworks(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)

	// What an owner may list, and how it is stored.
	for _, tc := range []struct {
		nets        []string
		field, code string
	}{
		{[]string{"10.0.0.0/8", "not a network"}, "links[0].allowed_networks[1]", "invalid_network"},
		{[]string{"fe80::1%eth0"}, "links[0].allowed_networks[0]", "invalid_network"},
		{[]string{"::ffff:10.0.0.0/80"}, "links[0].allowed_networks[0]", "invalid_network"},
		{slices.Repeat([]string{"10.0.0.1"}, 51), "links[0].allowed_networks", "invalid_networks"},
	} {
		r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{spec(withNetworks(tc.nets...))}})
		var e struct{ Error struct{ Code, Field string } }
		r.JSON(t, &e)
		if r.Status != 400 || e.Error.Code != tc.code || e.Error.Field != tc.field {
			t.Errorf("%.40q: %d %s", tc.nets, r.Status, r.Body)
		}
	}
	if n := countLinks(t, st, key); n != 0 {
		t.Fatalf("refused specs made %d links", n)
	}
	stored := create(t, st, key, spec(withNetworks("10.1.2.3/8", "::ffff:192.0.2.1", "2001:db8::1/32", "10.0.0.0/8")))[0]
	var got struct {
		AllowedNetworks []string `json:"allowed_networks"`
	}
	st.Do(t, "GET", "/v1/links/"+stored.ID, key, nil).JSON(t, &got)
	if want := []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"}; !slices.Equal(got.AllowedNetworks, want) {
		t.Errorf("stored %v, want %v", got.AllowedNetworks, want)
	}
	st.Do(t, "GET", "/v1/links/"+create(t, st, key, spec())[0].ID, key, nil).JSON(t, &got)
	if got.AllowedNetworks == nil || len(got.AllowedNetworks) != 0 {
		t.Errorf("a link without networks lists %v, want []", got.AllowedNetworks)
	}

	// The test client is on 127.0.0.1: outside 203.0.113.0/24.
	recorded := func(typ string) int {
		return st.Count(t, `SELECT count(*) FROM audit_events WHERE type = $1`, typ)
	}
	outside := create(t, st, key, spec(withNetworks("203.0.113.0/24")))[0]
	for _, req := range []struct{ method, path string }{
		{"GET", outside.path()},
		{"POST", outside.path() + "/verify"},
		{"GET", outside.path() + "/open"},
	} {
		var body any
		if req.method == "POST" {
			body = map[string]any{}
		}
		if r := st.Do(t, req.method, req.path, "", body); r.Status != 403 || r.ErrorCode() != "network_not_allowed" {
			t.Errorf("%s %s from outside: %d %s", req.method, req.path, r.Status, r.Body)
		}
	}
	page := st.Do(t, "GET", outside.path(), "", nil, "Accept", "text/html")
	if page.Status != 403 || !strings.Contains(string(page.Body), "cannot be opened from your network") {
		t.Errorf("landing page from outside: %d %.300s", page.Status, page.Body)
	}
	code := create(t, st, key, spec(withNetworks("203.0.113.0/24"), func(s map[string]any) {
		s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "ann@example.com"}}
	}))[0]
	if r := st.Do(t, "POST", code.path()+"/otp", "", nil); r.Status != 403 || r.ErrorCode() != "network_not_allowed" {
		t.Errorf("code request from outside: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", code.path()+"/verify", "", map[string]string{"code": "123456"}); r.Status != 403 {
		t.Errorf("code verify from outside: %d %s", r.Status, r.Body)
	}
	if n := st.Count(t, `SELECT count(*) FROM otp_challenges`); n != 0 {
		t.Errorf("a code request from outside made %d challenges", n)
	}
	if n := st.Count(t, `SELECT coalesce(sum(access_count), 0) FROM links`); n != 0 || recorded("link.verified")+recorded("link.opened") != 0 {
		t.Fatalf("refused requests counted %d accesses, recorded %d verified and %d opened", n, recorded("link.verified"), recorded("link.opened"))
	}

	// Inside: it works as any link does.
	inside := create(t, st, key, spec(withNetworks("127.0.0.0/8", "2001:db8::/32")))[0]
	r, access := verify(t, st, inside, map[string]any{})
	if r.Status != 200 {
		t.Fatalf("verify from inside: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "GET", inside.path()+"/targets", access, nil); r.Status != 200 {
		t.Fatalf("targets from inside: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "GET", inside.path()+"/open", access, nil); r.Status != 302 {
		t.Fatalf("open from inside: %d %s", r.Status, r.Body)
	}
	opened := recorded("link.opened")

	// The recipient takes the session home, to 198.51.100.7.
	away := netip.MustParseAddr("198.51.100.7")
	ctx := link.WithClientIP(context.Background(), away)
	actor := events.Actor{Type: "recipient", IP: away.String()}
	token := strings.TrimPrefix(inside.path(), "/s/")
	if _, err := st.Service.Open(ctx, token, access, "", actor); apperr.CodeOf(err) != apperr.Forbidden {
		t.Errorf("open with the session from another network: %v", err)
	}
	if _, err := st.Service.SessionLink(ctx, token, access); apperr.CodeOf(err) != apperr.Forbidden {
		t.Errorf("targets with the session from another network: %v", err)
	}
	if _, err := st.Service.Verify(ctx, token, link.VerifyInput{}, actor); apperr.CodeOf(err) != apperr.Forbidden {
		t.Errorf("verify from another network: %v", err)
	}
	if n := recorded("link.opened"); n != opened {
		t.Errorf("opens from another network recorded %d link.opened", n-opened)
	}
	var count int
	st.Do(t, "GET", "/v1/links/"+inside.ID, key, nil).JSON(t, &struct {
		AccessCount *int `json:"access_count"`
	}{&count})
	if count != 1 {
		t.Errorf("access count %d after one verify inside and one outside, want 1", count)
	}
	// An address the edge could not read is outside every network.
	if _, err := st.Service.Verify(context.Background(), token, link.VerifyInput{}, events.Actor{Type: "recipient"}); apperr.CodeOf(err) != apperr.Forbidden {
		t.Errorf("verify without a client address: %v", err)
	}
}
