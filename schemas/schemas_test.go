package schemas

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/sharelinks/sharelinks/internal/events"
)

// The event types and their data, as the shared contract lists them. The
// test fails when a schema is added or dropped without updating this list.
var sampleData = map[string]map[string]any{
	"link.created": {
		"link_type": "download", "auth_type": "email_otp", "expires_at": "2030-01-02T03:04:05.123456789Z",
		"max_access_count": nil, "target_count": 3,
	},
	"link.revoked":           {},
	"link.restored":          {"status": "active"},
	"link.updated":           {"changed": []any{"expires_at", "max_access_count"}, "status": "active"},
	"link.exhausted":         {"access_count": 5},
	"link.expired":           {},
	"link.verified":          {"access_count": 0, "session_id": "5b0e8f8e-6c1f-4a7e-9d55-0c6a2f4b9e10"},
	"link.verify_failed":     {"reason": "bad_code"},
	"link.opened":            {"target_id": "drive:file/123", "grant_id": "0f7a3c2e-1b4d-4e5f-8a9b-c0d1e2f3a4b5"},
	"link.purged":            {},
	"notification.requested": {"notification_id": "1c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f", "channel": "email"},
	"notification.sent": {
		"notification_id": "1c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f", "channel": "sms",
		"provider_id": "SM0123456789abcdef", "attempts": 1,
	},
	"notification.failed": {
		"notification_id": "1c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f", "channel": "email",
		"error": "550 mailbox unavailable", "attempts": 5,
	},
	"otp.requested": {"challenge_id": "7d6c5b4a-3f2e-4d1c-8b0a-9f8e7d6c5b4a", "channel": "sms"},
	"otp.sent": {
		"challenge_id": "7d6c5b4a-3f2e-4d1c-8b0a-9f8e7d6c5b4a", "channel": "email", "provider_id": "<abc@mail>",
	},
	"otp.failed": {
		"challenge_id": "7d6c5b4a-3f2e-4d1c-8b0a-9f8e7d6c5b4a", "channel": "sms", "error": "21211 invalid number",
	},
}

func sampleEvent(typ string) map[string]any {
	return map[string]any{
		"id":          "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7",
		"type":        typ,
		"version":     1,
		"occurred_at": "2026-03-04T05:06:07.891011121+01:00",
		"owner_id":    "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
		"link_id":     "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901",
		"actor": map[string]any{
			"type": "recipient", "ip": "203.0.113.7", "user_agent": "curl/8.5",
		},
		"data": maps.Clone(sampleData[typ]),
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

// wrongType returns a JSON value of a different type than v.
func wrongType(v any) any {
	switch v.(type) {
	case string:
		return 12345
	default:
		return "not-the-right-type"
	}
}

func TestEventTypes(t *testing.T) {
	t.Parallel()
	want := slices.Sorted(maps.Keys(sampleData))
	if got := EventTypes(); !slices.Equal(got, want) {
		t.Fatalf("EventTypes() = %v, want %v", got, want)
	}
	// The consumers' subject filters are built from events.Types.
	if got := slices.Sorted(slices.Values(events.Types)); !slices.Equal(got, want) {
		t.Fatalf("events.Types = %v, want %v", got, want)
	}
}

func TestValidateEvent(t *testing.T) {
	t.Parallel()
	for _, typ := range EventTypes() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			if err := ValidateEvent(mustJSON(t, sampleEvent(typ))); err != nil {
				t.Fatalf("good sample rejected: %v", err)
			}

			type mutation struct {
				name   string
				mutate func(ev map[string]any)
			}
			var bad []mutation
			for _, k := range []string{"id", "type", "version", "occurred_at", "owner_id", "link_id", "actor", "data"} {
				bad = append(bad, mutation{"missing " + k, func(ev map[string]any) { delete(ev, k) }})
			}
			bad = append(bad,
				mutation{"extra envelope field", func(ev map[string]any) { ev["email"] = "a@example.com" }},
				mutation{"extra data field", func(ev map[string]any) { ev["data"].(map[string]any)["token"] = "secret" }},
				mutation{"version 2", func(ev map[string]any) { ev["version"] = 2 }},
				mutation{"version as string", func(ev map[string]any) { ev["version"] = "1" }},
				mutation{"id not a uuid", func(ev map[string]any) { ev["id"] = "not-a-uuid" }},
				mutation{"link_id not a uuid", func(ev map[string]any) { ev["link_id"] = "1234" }},
				mutation{"occurred_at not a date-time", func(ev map[string]any) { ev["occurred_at"] = "2026-03-04 05:06" }},
				mutation{"data not an object", func(ev map[string]any) { ev["data"] = []any{} }},
				mutation{"actor not an object", func(ev map[string]any) { ev["actor"] = "owner" }},
				mutation{"actor type unknown", func(ev map[string]any) { ev["actor"].(map[string]any)["type"] = "admin" }},
				mutation{"actor extra field", func(ev map[string]any) { ev["actor"].(map[string]any)["email"] = "a@example.com" }},
				mutation{"actor key_prefix malformed", func(ev map[string]any) { ev["actor"].(map[string]any)["key_prefix"] = "key_1234" }},
				mutation{"actor ip wrong type", func(ev map[string]any) { ev["actor"].(map[string]any)["ip"] = 7 }},
			)
			for k, v := range sampleData[typ] {
				bad = append(bad,
					mutation{"missing data." + k, func(ev map[string]any) { delete(ev["data"].(map[string]any), k) }},
					mutation{"wrong type data." + k, func(ev map[string]any) { ev["data"].(map[string]any)[k] = wrongType(v) }},
				)
			}
			for _, m := range bad {
				ev := sampleEvent(typ)
				m.mutate(ev)
				raw := mustJSON(t, ev)
				if err := ValidateEvent(raw); err == nil {
					t.Errorf("%s: accepted %s", m.name, raw)
				}
			}
		})
	}
}

func TestValidateEventDataRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		typ  string
		data map[string]any // merged into the sample's data
		ok   bool
	}{
		{"max_access_count integer", "link.created", map[string]any{"max_access_count": 10}, true},
		{"max_access_count zero", "link.created", map[string]any{"max_access_count": 0}, false},
		{"max_access_count fractional", "link.created", map[string]any{"max_access_count": 1.5}, false},
		{"expires_at not a date-time", "link.created", map[string]any{"expires_at": "tomorrow"}, false},
		{"auth_type unknown", "link.created", map[string]any{"auth_type": "sso"}, false},
		{"link_type unknown", "link.created", map[string]any{"link_type": "stream"}, false},
		{"target_count zero", "link.created", map[string]any{"target_count": 0}, false},
		{"reason unknown", "link.verify_failed", map[string]any{"reason": "bad_luck"}, false},
		{"channel unknown", "otp.requested", map[string]any{"channel": "pigeon"}, false},
		{"error at 1000 chars", "notification.failed", map[string]any{"error": strings.Repeat("x", 1000)}, true},
		{"error over 1000 chars", "otp.failed", map[string]any{"error": strings.Repeat("x", 1001)}, false},
		{"attempts zero", "notification.sent", map[string]any{"attempts": 0}, false},
		{"session_id not a uuid", "link.verified", map[string]any{"session_id": "abc"}, false},
		{"target_id empty", "link.opened", map[string]any{"target_id": ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := sampleEvent(tt.typ)
			maps.Copy(ev["data"].(map[string]any), tt.data)
			err := ValidateEvent(mustJSON(t, ev))
			if tt.ok && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestValidateEventEnvelopeErrors(t *testing.T) {
	t.Parallel()
	unknown := sampleEvent("link.created")
	unknown["type"] = "link.teleported"
	noType := sampleEvent("link.created")
	delete(noType, "type")
	good := mustJSON(t, sampleEvent("link.created"))

	tests := []struct {
		name        string
		raw         []byte
		wantUnknown bool
	}{
		{"unknown type", mustJSON(t, unknown), true},
		{"no type", mustJSON(t, noType), true},
		{"not JSON", []byte("{"), false},
		{"not an object", []byte(`["link.created"]`), false},
		{"trailing data", append(slices.Clone(good), []byte(` {}`)...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateEvent(tt.raw)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := errors.Is(err, ErrUnknownEventType); got != tt.wantUnknown {
				t.Fatalf("errors.Is(%v, ErrUnknownEventType) = %v, want %v", err, got, tt.wantUnknown)
			}
		})
	}
}

func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	return doc
}

func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	doc := loadDoc(t)
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate openapi.yaml: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}

	// The API's event type enum mirrors the event schemas.
	var enum []string
	for _, v := range doc.Components.Schemas["EventType"].Value.Enum {
		enum = append(enum, v.(string))
	}
	slices.Sort(enum)
	if !slices.Equal(enum, EventTypes()) {
		t.Errorf("EventType enum = %v, want %v", enum, EventTypes())
	}

	// Every 4xx/5xx answer is an Error, except the readiness report and the
	// HTML page browsers get for an unknown link.
	errorSchema := doc.Components.Schemas["Error"].Value
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s: no operationId", method, path)
			}
			for code, resp := range op.Responses.Map() {
				if code[0] != '4' && code[0] != '5' {
					continue
				}
				if path == "/readyz" && code == "503" {
					continue
				}
				for mime, mt := range resp.Value.Content {
					if mime == "text/html" && path == "/s/{token}" {
						continue
					}
					if mime != "application/json" || mt.Schema == nil || mt.Schema.Value != errorSchema {
						t.Errorf("%s %s %s %s: not an Error", method, path, code, mime)
					}
				}
				if len(resp.Value.Content) == 0 {
					t.Errorf("%s %s %s: no body", method, path, code)
				}
			}
		}
	}
}

// response is a response the test writes through an httptest recorder.
type response struct {
	status int
	header map[string]string
	body   string
}

func (r response) record(t *testing.T) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	for k, v := range r.header {
		rec.Header().Set(k, v)
	}
	rec.WriteHeader(r.status)
	// net/http refuses a body on a 204; such a case hands its body to the
	// validator directly, as a broken proxy could deliver it.
	if r.status != http.StatusNoContent {
		if _, err := io.WriteString(rec, r.body); err != nil {
			t.Fatalf("write body: %v", err)
		}
	}
	return rec.Result()
}

const (
	jsonCT  = "application/json"
	linkID  = "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"
	goodErr = `{"error":{"code":"link_not_found","message":"link not found or has expired"}}`
)

func linkJSON(t *testing.T, mutate func(map[string]any)) string {
	t.Helper()
	l := map[string]any{
		"id": linkID, "url": "https://share.example.com/s/Zm9vYmFy", "status": "active", "link_type": "view",
		"targets": []any{
			map[string]any{"id": "f1", "type": "file", "name": "report.pdf", "url": "https://files.example.com/f1"},
			map[string]any{"id": "d1", "type": "folder"},
		},
		"expires_at": "2030-01-01T00:00:00Z", "max_access_count": nil, "access_count": 0,
		"authenticator": map[string]any{"auth_type": "email_otp", "auth_context": "j***@example.com"},
		"title":         "Q3 report", "message": "",
		"created_at": "2026-01-01T00:00:00.123456Z", "updated_at": "2026-01-01T00:00:00.123456Z",
		"revoked_at": nil, "allowed_networks": []any{"203.0.113.0/24"}, "tags": []any{"legal"}, "not_before": nil,
	}
	if mutate != nil {
		mutate(l)
	}
	return string(mustJSON(t, l))
}

func TestValidateResponse(t *testing.T) {
	t.Parallel()
	jsonHdr := map[string]string{"Content-Type": "application/json; charset=utf-8"}
	tests := []struct {
		name   string
		method string
		target string
		resp   response
		ok     bool
	}{
		{"link", "GET", "/v1/links/" + linkID, response{200, jsonHdr, linkJSON(t, nil)}, true},
		{"link on another host", "GET", "http://127.0.0.1:41234/v1/links/" + linkID, response{200, jsonHdr, linkJSON(t, nil)}, true},
		{"link with max_access_count", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["max_access_count"] = 3 })}, true},
		{"link missing status", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { delete(l, "status") })}, false},
		{"link unknown status", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["status"] = "paused" })}, false},
		{"link extra field", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["token"] = "Zm9vYmFy" })}, false},
		{"link id not a uuid", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["id"] = "42" })}, false},
		{"link url not absolute", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["url"] = "/s/Zm9vYmFy" })}, false},
		{"link created_at not a date-time", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["created_at"] = "yesterday" })}, false},
		{"link max_access_count a string", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["max_access_count"] = "3" })}, false},
		{"link revoked_at set", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["revoked_at"] = "2026-02-01T00:00:00Z" })}, true},
		{"link target type unknown", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["targets"] = []any{map[string]any{"id": "x", "type": "disk"}} })}, false},
		{"link access_count a string", "GET", "/v1/links/" + linkID,
			response{200, jsonHdr, linkJSON(t, func(l map[string]any) { l["access_count"] = "0" })}, false},
		{"link as text", "GET", "/v1/links/" + linkID, response{200, map[string]string{"Content-Type": "text/plain"}, linkJSON(t, nil)}, false},
		{"link not JSON", "GET", "/v1/links/" + linkID, response{200, jsonHdr, "{"}, false},
		{"undocumented status", "GET", "/v1/links/" + linkID, response{418, jsonHdr, goodErr}, false},
		{"unknown path", "GET", "/v2/links", response{200, jsonHdr, `{}`}, false},
		{"not found", "GET", "/v1/links/" + linkID, response{404, jsonHdr, goodErr}, true},
		{"error with field", "POST", "/v1/links",
			response{422, jsonHdr, `{"error":{"code":"invalid_expires_at","message":"in the past","field":"links[0].expires_at"}}`}, true},
		{"error not wrapped", "GET", "/v1/links/" + linkID, response{404, jsonHdr, `{"code":"link_not_found","message":"x"}`}, false},
		{"error code not snake_case", "GET", "/v1/links/" + linkID, response{404, jsonHdr, `{"error":{"code":"Not Found","message":"x"}}`}, false},
		{"created", "POST", "/v1/links", response{201, jsonHdr, `{"links":[` + linkJSON(t, nil) + `]}`}, true},
		{"page", "GET", "/v1/links?size=2", response{200, jsonHdr, `{"links":[` + linkJSON(t, nil) + `],"count":1,"last":"abc"}`}, true},
		{"page without count", "GET", "/v1/links", response{200, jsonHdr, `{"links":[]}`}, false},
		{"revoke", "POST", "/v1/links/revoke", response{200, jsonHdr, `{"revoked":["` + linkID + `"],"not_found":[]}`}, true},
		{"deleted", "DELETE", "/v1/links/" + linkID, response{204, nil, ""}, true},
		{"deleted with a body", "DELETE", "/v1/links/" + linkID, response{204, jsonHdr, `{}`}, false},
		{"throttled", "POST", "/s/abc/verify", response{429, map[string]string{"Content-Type": jsonCT, "Retry-After": "30"},
			`{"error":{"code":"too_many_attempts","message":"try later"}}`}, true},
		{"throttled without Retry-After", "POST", "/s/abc/verify", response{429, jsonHdr,
			`{"error":{"code":"too_many_attempts","message":"try later"}}`}, false},
		{"verified", "POST", "/s/abc/verify", response{200,
			map[string]string{"Content-Type": jsonCT, "Set-Cookie": "sl_access=x; Path=/s/abc; HttpOnly; Secure; SameSite=Lax"},
			`{"access_token":"x","token_type":"Bearer","expires_in":900}`}, true},
		{"verified without cookie", "POST", "/s/abc/verify", response{200, jsonHdr,
			`{"access_token":"x","token_type":"Bearer","expires_in":900}`}, false},
		{"recipient page json", "GET", "/s/abc", response{200, jsonHdr,
			`{"title":"t","message":"m","link_type":"view","auth_type":"sms_otp","destination":"+33 •• 12","expires_at":"2030-01-01T00:00:00Z"}`}, true},
		{"recipient page html", "GET", "/s/abc", response{200, map[string]string{"Content-Type": "text/html; charset=utf-8"}, "<html></html>"}, true},
		{"redirect to target", "GET", "/s/abc/open?target=f1", response{302,
			map[string]string{"Location": "https://files.example.com/f1?grant=x"}, ""}, true},
		{"redirect without Location", "GET", "/s/abc/open?target=f1", response{302, nil, ""}, false},
		{"otp send failed", "POST", "/s/abc/otp", response{502, jsonHdr, `{"error":{"code":"otp_send_failed","message":"try again"}}`}, true},
		{"jwks", "GET", "/.well-known/jwks.json", response{200, jsonHdr,
			`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","use":"sig","alg":"EdDSA"}]}`}, true},
		{"jwks wrong curve", "GET", "/.well-known/jwks.json", response{200, jsonHdr,
			`{"keys":[{"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","use":"sig","alg":"EdDSA"}]}`}, false},
		{"not ready", "GET", "/readyz", response{503, jsonHdr, `{"status":"unavailable","checks":{"postgres":"ok","nats":"connection refused"}}`}, true},
		{"metrics", "GET", "/metrics", response{200, map[string]string{"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, "up 1\n"}, true},
		{"healthz", "GET", "/healthz", response{200, jsonHdr, `{"status":"ok"}`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(tt.method, tt.target, nil)
			res := tt.resp.record(t)
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if res.StatusCode == http.StatusNoContent {
				body = []byte(tt.resp.body)
			}
			err = ValidateResponse(req, res.StatusCode, res.Header, body)
			if tt.ok && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestValidateResponseKeepsSecretsOut checks that a rejected response's
// error names the problem without repeating the values around it: response
// bodies carry access tokens and redirects carry grants.
func TestValidateResponseKeepsSecretsOut(t *testing.T) {
	t.Parallel()
	const secret = "eyJSECRET.TOKEN.VALUE"
	tests := []struct {
		name   string
		method string
		target string
		resp   response
	}{
		{"token in a bad body", "POST", "/s/abc/verify", response{200,
			map[string]string{"Content-Type": jsonCT, "Set-Cookie": "sl_access=" + secret},
			`{"access_token":"` + secret + `","token_type":"Bearer","expires_in":"900"}`}},
		{"grant in a bad Location", "GET", "/s/abc/open?target=f1", response{302,
			map[string]string{"Location": "https://files.example.com/%zz?grant=" + secret}, ""}},
		{"token in an unknown path", "GET", "/s/" + secret + "/download", response{200,
			map[string]string{"Content-Type": jsonCT}, `{}`}},
		{"grant in a bad body", "GET", "/s/abc/open?target=f1", response{200,
			map[string]string{"Content-Type": jsonCT}, `{"grant":"` + secret + `","target":{"id":"f1"}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := tt.resp.record(t)
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			err = ValidateResponse(httptest.NewRequest(tt.method, tt.target, nil), res.StatusCode, res.Header, body)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error repeats the secret: %v", err)
			}
		})
	}
}

// TestConcurrentUse runs both validators from many goroutines at once, so
// that -race sees any shared state they write.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	event := mustJSON(t, sampleEvent("link.opened"))
	body := []byte(linkJSON(t, nil))
	header := http.Header{"Content-Type": {jsonCT}}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 16 {
		wg.Go(func() {
			if err := ValidateEvent(event); err != nil {
				errs <- err
			}
			req := httptest.NewRequest("GET", "/v1/links/"+linkID, nil)
			if err := ValidateResponse(req, 200, header, body); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
