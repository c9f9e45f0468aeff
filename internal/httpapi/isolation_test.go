package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/schemas"
)

// TestEveryOwnerRouteIsIsolated is the two-tenant matrix (OWASP API1,
// reliability.md §7.4): Bob, with his own key, aims every owner operation
// in openapi.yaml at Alice's link, notification and webhook. Each answers
// 404 or shows him nothing, and Alice's things are as they were. The
// operations come from the document, so a new owner route without a case
// here fails the test rather than going unchecked.
func TestEveryOwnerRouteIsIsolated(t *testing.T) {
	t.Parallel()
	st, alice := newStack(t)
	bob := st.OwnerKey(t, "bob-"+t.Name())
	l := create(t, st, alice, spec(func(s map[string]any) {
		s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "jane@example.com"}}
		s["notify"] = true
	}))[0]
	var hook struct{ ID string }
	st.Do(t, "POST", "/v1/webhooks", alice, map[string]any{"url": "http://127.0.0.1:9/hook", "events": []string{"link.opened"}}).JSON(t, &hook)
	var notes struct{ Notifications []struct{ ID string } }
	st.Do(t, "GET", "/v1/links/"+l.ID+"/notifications", alice, nil).JSON(t, &notes)
	if len(notes.Notifications) != 1 || hook.ID == "" {
		t.Fatalf("alice's notification %+v, webhook %q", notes, hook.ID)
	}
	note := notes.Notifications[0].ID
	// What the operator set for alice (after her link was made) is hers alone.
	if err := st.Store.SetOwnerPolicy(context.Background(), "owner-"+t.Name(), link.OwnerPolicy{MaxAccessCount: 7}); err != nil {
		t.Fatal(err)
	}

	notFound := func(method, path string, body any) func(t *testing.T) {
		return func(t *testing.T) {
			if r := st.Do(t, method, path, bob, body); r.Status != http.StatusNotFound {
				t.Errorf("bob %s %s: %d %s, want 404", method, path, r.Status, r.Body)
			}
		}
	}
	// seesNone: the answer is bob's own (empty) collection, with nothing of alice's.
	seesNone := func(path, field string) func(t *testing.T) {
		return func(t *testing.T) {
			r := st.Do(t, "GET", path, bob, nil)
			var page map[string]json.RawMessage
			var items []any
			if r.Status == http.StatusOK {
				r.JSON(t, &page)
				if err := json.Unmarshal(page[field], &items); err != nil {
					t.Fatalf("bob GET %s: %s is not a list: %s", path, field, r.Body)
				}
			}
			if r.Status != http.StatusOK || len(items) != 0 {
				t.Errorf("bob GET %s: %d %s, want 200 with no %s", path, r.Status, r.Body, field)
			}
		}
	}
	cases := map[string]func(t *testing.T){
		"GET /v1/policy": func(t *testing.T) { // bob's own: what the operator set for alice is not in it
			var p struct {
				MaxAccessCount *int `json:"max_access_count"`
			}
			if r := st.Do(t, "GET", "/v1/policy", bob, nil); r.Status != http.StatusOK {
				t.Errorf("bob GET /v1/policy: %d %s", r.Status, r.Body)
			} else if r.JSON(t, &p); p.MaxAccessCount != nil {
				t.Errorf("bob's policy carries a limit: %s", r.Body)
			}
		},
		"GET /v1/links": seesNone("/v1/links", "links"),
		"POST /v1/links": func(t *testing.T) { // creates bob's own: alice's list is unchanged
			create(t, st, bob, spec())
			if n := countLinks(t, st, alice); n != 1 {
				t.Errorf("alice has %d links after bob created one", n)
			}
		},
		"POST /v1/links/revoke": func(t *testing.T) {
			for _, body := range []map[string]any{{"ids": []string{l.ID}}, {"target_id": "report.pdf"}} {
				r := st.Do(t, "POST", "/v1/links/revoke", bob, body)
				var out struct{ Revoked []string }
				if r.Status == http.StatusOK {
					r.JSON(t, &out)
				}
				// (bob's own link to report.pdf, made above, may be in it)
				if r.Status != http.StatusOK || slices.Contains(out.Revoked, l.ID) {
					t.Errorf("bob revokes alice's link with %v: %d %s", body, r.Status, r.Body)
				}
			}
		},
		"POST /v1/links/send":         notFound("POST", "/v1/links/send", map[string]any{"link_ids": []string{l.ID}, "recipients": []string{"x@example.com"}}),
		"GET /v1/links/{id}":          notFound("GET", "/v1/links/"+l.ID, nil),
		"DELETE /v1/links/{id}":       notFound("DELETE", "/v1/links/"+l.ID, nil),
		"POST /v1/links/{id}/restore": notFound("POST", "/v1/links/"+l.ID+"/restore", nil),
		"POST /v1/links/restore": func(t *testing.T) {
			r := st.Do(t, "POST", "/v1/links/restore", bob, map[string]any{"ids": []string{l.ID}})
			if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"not_restored":[{"id":"`+l.ID+`","code":"link_not_found"`) {
				t.Errorf("bob restores alice's link: %d %s", r.Status, r.Body)
			}
		},
		"PATCH /v1/links/{id}":             notFound("PATCH", "/v1/links/"+l.ID, map[string]any{"title": "bob was here", "max_access_count": nil}),
		"GET /v1/links/{id}/notifications": notFound("GET", "/v1/links/"+l.ID+"/notifications", nil),
		"GET /v1/links/{id}/events":        notFound("GET", "/v1/links/"+l.ID+"/events", nil),
		"GET /v1/links/{id}/audit/export":  notFound("GET", "/v1/links/"+l.ID+"/audit/export", nil),
		"GET /v1/notifications/{id}":       notFound("GET", "/v1/notifications/"+note, nil),
		"GET /v1/events": func(t *testing.T) {
			seesNone("/v1/events", "events")(t)
			seesNone("/v1/events?link_id="+l.ID, "events")(t)
		},
		"POST /v1/webhooks": func(t *testing.T) { // creates bob's own: alice's list is checked below
			if r := st.Do(t, "POST", "/v1/webhooks", bob, map[string]any{"url": "http://127.0.0.1:9/bob", "events": []string{"link.opened"}}); r.Status != http.StatusCreated {
				t.Errorf("bob's own webhook: %d %s", r.Status, r.Body)
			}
		},
		"GET /v1/webhooks":                 seesNone("/v1/webhooks", "webhooks"),
		"DELETE /v1/webhooks/{id}":         notFound("DELETE", "/v1/webhooks/"+hook.ID, nil),
		"GET /v1/webhooks/{id}/deliveries": notFound("GET", "/v1/webhooks/"+hook.ID+"/deliveries", nil),
	}

	doc, err := openapi3.NewLoader().LoadFromData(schemas.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	slices.Sort(ops)
	for _, op := range ops {
		check, ok := cases[op]
		if !ok {
			t.Errorf("%s is an owner operation with no isolation check here", op)
			continue
		}
		delete(cases, op)
		t.Run(op, check)
	}
	for op := range cases {
		t.Errorf("%s is checked here but not in openapi.yaml", op)
	}

	// Alice's things are untouched.
	var still linkResp
	st.Do(t, "GET", "/v1/links/"+l.ID, alice, nil).JSON(t, &still)
	if still.Status != "active" || still.MaxAccessCount != nil {
		t.Errorf("alice's link after bob's attempts: %+v", still)
	}
	if n := st.Count(t, `SELECT count(*) FROM audit_events WHERE link_id = $1 AND type IN ('link.updated', 'link.revoked')`, l.ID); n != 0 {
		t.Errorf("bob's attempts recorded %d changes to alice's links", n)
	}
	var hooks struct{ Webhooks []struct{ ID string } }
	st.Do(t, "GET", "/v1/webhooks", alice, nil).JSON(t, &hooks)
	if len(hooks.Webhooks) != 1 || hooks.Webhooks[0].ID != hook.ID {
		t.Errorf("alice's webhooks after bob's attempts: %+v", hooks)
	}
	if r := st.Do(t, "GET", "/v1/notifications/"+note, alice, nil); r.Status != http.StatusOK {
		t.Errorf("alice's notification after bob's attempts: %d %s", r.Status, r.Body)
	}
}
