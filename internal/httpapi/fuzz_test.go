package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sharelinks/sharelinks/internal/testkit"
	"github.com/sharelinks/sharelinks/schemas"
)

// fuzzRoute is one route the API serves. Its path holds {id}, {hook} or
// {token}, filled from the fuzzer's input or from the seeded links.
type fuzzRoute struct {
	method, path string
	owner        bool     // sends an API key
	pages        bool     // an HTML page: errors are pages, not JSON
	params       []string // query parameters the handler reads
}

var fuzzRoutes = []fuzzRoute{
	{"POST", "/v1/links", true, false, nil},
	{"GET", "/v1/links", true, false, []string{"status", "link_type", "target_id", "order_by", "order", "size", "recipient", "last", "tag"}},
	{"GET", "/v1/links/{id}", true, false, nil},
	{"DELETE", "/v1/links/{id}", true, false, nil},
	{"POST", "/v1/links/revoke", true, false, nil},
	{"POST", "/v1/links/send", true, false, nil},
	{"GET", "/v1/links/{id}/notifications", true, false, nil},
	{"GET", "/v1/notifications/{id}", true, false, nil},
	{"GET", "/v1/links/{id}/events", true, false, []string{"size", "since", "last", "type"}},
	{"GET", "/v1/events", true, false, []string{"link_id", "type", "size", "since", "last"}},
	{"POST", "/v1/webhooks", true, false, nil},
	{"GET", "/v1/webhooks", true, false, nil},
	{"DELETE", "/v1/webhooks/{hook}", true, false, nil},
	{"GET", "/v1/webhooks/{hook}/deliveries", true, false, nil},
	{"GET", "/s/{token}", false, false, nil},
	{"POST", "/s/{token}/verify", false, false, nil},
	{"POST", "/s/{token}/otp", false, false, nil},
	{"GET", "/s/{token}/targets", false, false, nil},
	{"GET", "/s/{token}/open", false, false, []string{"target"}},
	{"GET", "/.well-known/jwks.json", false, false, nil},
	{"POST", "/s/{token}/unlock", false, true, nil},
	{"POST", "/s/{token}/send-code", false, true, nil},
	{"GET", "/s/{token}/code", false, true, []string{"e"}},
	{"GET", "/s/{token}/files", false, true, nil},
	{"GET", "/s/{token}/go", false, true, []string{"target", "open"}},
	{"PATCH", "/v1/links/{id}", true, false, nil},
	{"GET", "/v1/links/{id}/audit/export", true, false, nil},
	{"GET", "/.well-known/sharelinks-audit-keys.json", false, false, nil},
	{"POST", "/v1/links/{id}/restore", true, false, nil},
	{"GET", "/v1/policy", true, false, nil},
	{"POST", "/v1/links/restore", true, false, nil},
}

// fuzzTarget is what the fuzzer aims at: the seeded links and webhook.
type fuzzTarget struct {
	st       *testkit.Stack
	key      string // the owner's API key
	otherKey string // another owner's
	ids      []string
	tokens   []string
	hooks    []string
	access   string // a valid access token for tokens[1]
}

func newFuzzTarget(f *testing.F) *fuzzTarget {
	st := testkit.NewStack(f, "", "")
	ft := &fuzzTarget{st: st, key: st.OwnerKey(f, "fuzz-owner"), otherKey: st.OwnerKey(f, "fuzz-other")}
	specs := []map[string]any{
		spec(),
		spec(withPassword("correct horse battery")),
		spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "jane@example.com"}}
			s["notify"] = true
		}),
		spec(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "sms_otp", "auth_context": "+14155550123"}}
		}),
		spec(func(s map[string]any) { s["max_access_count"] = 1 }),
	}
	r := st.Do(f, "POST", "/v1/links", ft.key, map[string]any{"links": specs})
	if r.Status != http.StatusCreated {
		f.Fatalf("seed links: %d %s", r.Status, r.Body)
	}
	var out struct{ Links []linkResp }
	r.JSON(f, &out)
	for _, l := range out.Links {
		ft.ids = append(ft.ids, l.ID)
		ft.tokens = append(ft.tokens, strings.TrimPrefix(l.path(), "/s/"))
	}
	v := st.Do(f, "POST", "/s/"+ft.tokens[1]+"/verify", "", map[string]string{"password": "correct horse battery"})
	var acc struct {
		AccessToken string `json:"access_token"`
	}
	v.JSON(f, &acc)
	ft.access = acc.AccessToken
	h := st.Do(f, "POST", "/v1/webhooks", ft.key, map[string]any{"url": "http://127.0.0.1:9/hook", "events": []string{"link.opened"}})
	var hook struct{ ID string }
	h.JSON(f, &hook)
	ft.hooks = append(ft.hooks, hook.ID)
	return ft
}

// FuzzAPI sends each route arbitrary path values, query values, bodies
// and credentials. Whatever arrives, the answer is a 2xx–4xx (never a
// 500), a JSON error with a code on the API's 4xx, a response that matches
// openapi.yaml, no API key echoed, and no half-written state: every link
// has the link.created event its creation wrote with it.
func FuzzAPI(f *testing.F) {
	ft := newFuzzTarget(f)
	link := func(mods ...func(map[string]any)) []byte {
		raw, _ := json.Marshal(map[string]any{"links": []any{spec(mods...)}})
		return raw
	}
	seeds := []struct {
		route       int
		auth, pick  uint8
		id, param   string
		value, body string
	}{
		{0, 0, 0, "", "", "", string(link())},
		{0, 0, 0, "", "", "", string(link(withPassword("correct horse battery")))},
		{0, 0, 0, "", "", "", string(link(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "a@example.com"}}
			s["notify"] = true
			s["max_access_count"] = 3
			s["title"] = "Q3 report"
			s["message"] = "Here it is"
		}))},
		{0, 0, 0, "", "", "", `{"links":[{"targets":[{"id":"d","type":"folder","url":"https://x.example/d/"}],"link_type":"upload","expires_at":"` +
			future(time.Hour) + `","authenticators":[{"auth_type":"sms_otp","auth_context":"+44 20 7946 0958"}]}]}`},
		{0, 2, 0, "", "", "", `{"links":[{"title":"x"}]}`},
		{0, 0, 0, "", "", "", string(link(func(s map[string]any) { s["allowed_networks"] = []string{"10.0.0.0/8", "::1", "x"} }))},
		{0, 0, 0, "", "", "", string(link(func(s map[string]any) { s["allowed_networks"] = []string{"203.0.113.0/24"} }))},
		{0, 0, 0, "", "retry-1", "", string(link())},
		{0, 0, 0, "", "retry-1", "", string(link(withPassword("correct horse battery")))},
		{0, 2, 0, "", "retry-1", "", string(link())},
		{0, 0, 0, "", "naïve key", "", string(link())},
		{5, 0, 0, "", "retry-1", "", `{"link_ids":["` + ft.ids[2] + `"],"recipients":["bob@example.com"]}`},
		{0, 0, 0, "", "", "", `{"links":[{"title":"a\u0000b","message":"c\u0000","link_type":"view","targets":[{"id":"x\u0000","name":"n\u0000","type":"file","url":"https://x.example/f"}],"expires_at":"` +
			future(time.Hour) + `"}]}`},
		{1, 0, 0, "", "target_id", "a\x00\xfb", ""},
		{9, 0, 0, "", "type", "link.\xfb\x00", ""},
		{18, 3, 1, "", "target", "\xfb", ""},
		{1, 0, 0, "", "last", "eyJvIjoiY3JlYXRlZF9hdCIsImQiOnRydWUsInQiOiIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsImkiOiJ4In0", ""}, // a cursor made by hand, its id no link id
		{9, 0, 0, "", "last", "eyJvIjoib2NjdXJyZWRfYXQiLCJkIjp0cnVlLCJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMFoiLCJpIjoieCJ9", ""},
		{5, 0, 0, "", "", "", `{"link_ids":["` + ft.ids[2] + `"],"recipients":["bob@example.com"],"message":"a\u0000"}`},
		{1, 0, 0, "", "size", "5", ""},
		{1, 0, 0, "", "tag", "legal", ""},
		{4, 0, 0, "", "", "", `{"tag":"legal"}`},
		{4, 0, 0, "", "", "", `{"recipient":"jane@example.com"}`},
		{0, 0, 0, "", "", "", string(link(func(s map[string]any) { s["tags"] = []string{"legal", "q3"} }))},
		{1, 0, 0, "", "status", "active", ""},
		{1, 0, 0, "", "recipient", "jane@example.com", ""},
		{1, 0, 0, "", "last", "eyJ4IjoxfQ", ""},
		{1, 0, 0, "", "order_by", "expires_at", ""},
		{2, 0, 0, "", "", "", ""},
		{2, 2, 0, "", "", "", ""},
		{2, 0, 0, "not-a-uuid", "", "", ""},
		{4, 0, 0, "", "", "", `{"ids":["` + ft.ids[4] + `"]}`},
		{4, 0, 0, "", "", "", `{"target_ids":["report.pdf"]}`},
		{4, 0, 0, "", "", "", `{"target_id":"d"}`},
		{3, 0, 4, "", "", "", ""},
		{5, 0, 0, "", "", "", `{"link_ids":["` + ft.ids[2] + `"],"recipients":["bob@example.com"],"message":"again"}`},
		{6, 0, 2, "", "", "", ""},
		{7, 0, 0, "00000000-0000-0000-0000-000000000000", "", "", ""},
		{8, 0, 0, "", "size", "2", ""},
		{9, 0, 0, "", "since", "2020-01-01T00:00:00Z", ""},
		{9, 0, 0, "", "type", "link.created", ""},
		{9, 0, 0, "", "link_id", ft.ids[0], ""},
		{10, 0, 0, "", "", "", `{"url":"http://127.0.0.1:9/x","events":["link.opened","link.expired"]}`},
		{10, 0, 0, "", "", "", `{"url":"ftp://example.com/x","events":["link.opened"]}`},
		{11, 0, 0, "", "", "", ""},
		{13, 0, 0, "", "", "", ""},
		{12, 0, 0, "", "", "", ""},
		{14, 1, 0, "", "", "", ""},
		{15, 1, 1, "", "", "", `{"password":"correct horse battery"}`},
		{15, 1, 0, "", "", "", `{}`},
		{15, 1, 3, "", "", "", `{"code":"123456"}`},
		{15, 1, 1, "", "", "", `{"password":`},
		{16, 1, 2, "", "", "", `{}`},
		{17, 3, 1, "", "", "", ""},
		{18, 3, 1, "", "target", "report.pdf", ""},
		{18, 3, 1, "", "target", "nope", ""},
		{19, 1, 0, "", "", "", ""},
		{20, 1, 1, "", "", "", "password=x&csrf=y"},
		{21, 1, 2, "", "", "", "csrf=y"},
		{22, 1, 2, "", "e", "wrong", ""},
		{23, 3, 1, "", "", "", ""},
		{24, 1, 0, "", "open", "1", ""},
		{24, 3, 1, "", "target", "report.pdf", ""},
		{25, 0, 0, "", "", "", `{"title":"new","max_access_count":null,"expires_at":"` + future(time.Hour) + `"}`},
		{25, 0, 1, "", "", "", `{"max_access_count":1,"allowed_networks":["203.0.113.0/24"]}`},
		{25, 0, 2, "", "", "", `{"max_access_count":1e400}`},
		{25, 2, 0, "", "", "", `{"message":"x"}`},
		{0, 0, 0, "", "", "", string(link(func(s map[string]any) {
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "a@example.com"}}
			s["otp_policy"] = map[string]any{"code_length": 8, "max_attempts": 3}
		}))},
		{0, 0, 0, "", "", "", string(link(func(s map[string]any) { s["otp_policy"] = map[string]any{"code_length": 0} }))},
		{25, 0, 2, "", "", "", `{"otp_policy":{"code_length":8,"resend_after":60}}`},
		{25, 0, 2, "", "", "", `{"otp_policy":null}`},
		{25, 0, 2, "", "", "", `{"otp_policy":{"code_ttl":1e400,"x":1}}`},
		{25, 0, 0, "", "", "", `{"otp_policy":{"code_length":8}}`},
		{28, 0, 4, "", "", "", ""},
		{28, 0, 0, "", "", "", ""},
		{28, 2, 4, "", "", "", ""},
		{29, 0, 0, "", "", "", ""},
		{29, 2, 0, "", "", "", ""},
		{30, 0, 0, "", "", "", `{"ids":["` + ft.ids[4] + `","` + ft.ids[0] + `"]}`},
		{30, 0, 0, "", "", "", `{"ids":["nope"]}`},
	}
	// Deep nesting and a huge array, within the body limit: a 4xx, without
	// the memory or stack to match.
	f.Add(uint8(0), uint8(0), uint8(0), "", "", "", []byte(`{"links":`+strings.Repeat("[", 500_000)))
	f.Add(uint8(0), uint8(0), uint8(0), "", "", "", []byte(`{"links":[`+strings.Repeat(`{},`, 300_000)+`{}]}`))
	for _, s := range seeds {
		f.Add(uint8(s.route), s.auth, s.pick, s.id, s.param, s.value, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, route, auth, pick uint8, id, param, value string, body []byte) {
		ft.check(t, route, auth, pick, id, param, value, body)
	})
}

func (ft *fuzzTarget) check(t *testing.T, route, auth, pick uint8, id, param, value string, body []byte) {
	rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
	fill := func(known []string) string {
		if id == "" {
			return known[int(pick)%len(known)]
		}
		return url.PathEscape(id)
	}
	path := rt.path
	path = strings.Replace(path, "{id}", fill(ft.ids), 1)
	path = strings.Replace(path, "{hook}", fill(ft.hooks), 1)
	path = strings.Replace(path, "{token}", fill(ft.tokens), 1)
	q := url.Values{}
	// On the routes that take an Idempotency-Key (and no query), the
	// parameter name is the key, so retries, reuses and odd keys all meet
	// the same checks as any other request.
	idemKey := ""
	if len(rt.params) == 0 && (rt.path == "/v1/links" || rt.path == "/v1/links/send") && param != "" &&
		utf8.ValidString(param) && !strings.ContainsFunc(param, unicode.IsControl) {
		idemKey = param
	}
	if len(rt.params) > 0 && (param != "" || value != "") {
		// An input without a name sets one of the handler's parameters.
		name := param
		if name == "" {
			name = rt.params[int(pick)%len(rt.params)]
		}
		q.Set(name, value)
	}
	u := ft.st.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if rt.method != "GET" && rt.method != "DELETE" {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(rt.method, u, rd)
	if err != nil {
		t.Fatalf("build %s %s: %v", rt.method, u, err)
	}
	switch {
	case rt.pages:
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "text/html")
	case rd != nil:
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
	default:
		req.Header.Set("Accept", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	switch auth % 4 {
	case 0: // the owner
		if rt.owner {
			req.Header.Set("Authorization", "Bearer "+ft.key)
		}
	case 1: // none
	case 2: // another owner: sees none of the first one's links
		req.Header.Set("Authorization", "Bearer "+ft.otherKey)
	case 3: // a recipient's access token, or a bearer the fuzzer made
		if rt.owner {
			if value != "" && utf8.ValidString(value) && !strings.ContainsFunc(value, unicode.IsControl) {
				req.Header.Set("Authorization", "Bearer "+value)
			}
		} else {
			req.Header.Set("Authorization", "Bearer "+ft.access)
			req.AddCookie(&http.Cookie{Name: "sl_access", Value: ft.access})
		}
	}
	resp, err := ft.st.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", rt.method, rt.path, err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	where := rt.method + " " + rt.path
	t.Logf("%s → %d %s", where, resp.StatusCode, truncate(raw))
	if resp.StatusCode >= 500 {
		t.Fatalf("%s → %d: %s", where, resp.StatusCode, truncate(raw))
	}
	if bytes.Contains(raw, []byte(ft.key)) || bytes.Contains(raw, []byte(ft.otherKey)) {
		t.Fatalf("%s → %d echoes an API key", where, resp.StatusCode)
	}
	if !rt.pages {
		if resp.StatusCode >= 400 {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(raw, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s → %d is not a JSON error with a code and a message: %s", where, resp.StatusCode, truncate(raw))
			}
		}
		if err := schemas.ValidateResponse(req, resp.StatusCode, resp.Header, raw); err != nil {
			t.Fatalf("%s → %d does not match openapi.yaml: %v\nbody: %s", where, resp.StatusCode, err, truncate(raw))
		}
	}
	var orphans int
	if err := ft.st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM links l
		WHERE NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.link_id = l.id AND a.type = 'link.created')`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans > 0 {
		t.Fatalf("after %s → %d: %d links without their link.created event", where, resp.StatusCode, orphans)
	}
}
