package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

// A link made ahead of when it should open tells recipients when, and
// counts, sends and records nothing until then; the owner can bring the
// start forward, clear it, or move it later (which stops sessions too).
func TestNotBeforeHoldsALinkUntilItsStart(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	start := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	ls := create(t, st, key,
		spec(func(s map[string]any) { s["not_before"] = start.Format(time.RFC3339) }),
		spec(func(s map[string]any) {
			s["not_before"] = start.Format(time.RFC3339)
			s["authenticators"] = []any{map[string]any{"auth_type": "email_otp", "auth_context": "ann@example.com"}}
		}))
	open, otp := ls[0], ls[1]
	got := st.Do(t, "GET", "/v1/links/"+open.ID, key, nil)
	var view struct {
		NotBefore *time.Time `json:"not_before"`
		Status    string     `json:"status"`
	}
	got.JSON(t, &view)
	if view.NotBefore == nil || !view.NotBefore.Equal(start) || view.Status != "active" {
		t.Fatalf("link as created: %s", got.Body)
	}
	var recorded time.Time
	if err := st.Pool.QueryRow(context.Background(), `SELECT (data->>'not_before')::timestamptz FROM audit_events
		WHERE link_id = $1 AND type = 'link.created'`, open.ID).Scan(&recorded); err != nil || !recorded.Equal(start) {
		t.Fatalf("link.created carries not_before %v (%v), want %v", recorded, err, start)
	}

	early := func(r interface {
		ErrorCode() string
	}, status int, header http.Header, what string) {
		t.Helper()
		if status != 403 || r.ErrorCode() != "link_not_yet_active" {
			t.Fatalf("%s before the start: %d %s", what, status, r.ErrorCode())
		}
		secs, err := strconv.Atoi(header.Get("Retry-After"))
		if err != nil || secs < 7000 || secs > 7201 {
			t.Fatalf("%s: Retry-After %q, want the ~7200 s until the start", what, header.Get("Retry-After"))
		}
	}
	r, _ := verify(t, st, open, map[string]any{})
	early(r, r.Status, r.Header, "verify")
	if !strings.Contains(string(r.Body), start.Format(time.RFC3339)) {
		t.Fatalf("the answer does not say when: %s", r.Body)
	}
	r = st.Do(t, "GET", open.path(), "", nil)
	early(r, r.Status, r.Header, "landing")
	r = st.Do(t, "GET", open.path()+"/open", "", nil)
	early(r, r.Status, r.Header, "open without a session")
	r = st.Do(t, "POST", otp.path()+"/otp", "", map[string]any{})
	early(r, r.Status, r.Header, "code request")

	var counted, challenges, events int
	if err := st.Pool.QueryRow(context.Background(), `SELECT
		(SELECT sum(access_count) FROM links WHERE id = ANY($1::uuid[])),
		(SELECT count(*) FROM otp_challenges WHERE link_id = ANY($1::uuid[])),
		(SELECT count(*) FROM audit_events WHERE link_id = ANY($1::uuid[]) AND type <> 'link.created')`,
		[]string{open.ID, otp.ID}).Scan(&counted, &challenges, &events); err != nil {
		t.Fatal(err)
	}
	if counted != 0 || challenges != 0 || events != 0 {
		t.Fatalf("before the start: %d accesses, %d codes, %d events; want none", counted, challenges, events)
	}

	// A browser gets a page saying when.
	req, _ := http.NewRequest("GET", st.URL+open.path(), nil)
	req.Header.Set("Accept", "text/html")
	resp, err := st.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(page), "not open yet") || !strings.Contains(string(page), start.Format("15:04")) {
		t.Fatalf("page: %d %s", resp.StatusCode, page)
	}

	// The owner opens it now: it works at once.
	if r := st.Do(t, "PATCH", "/v1/links/"+open.ID, key, map[string]any{"not_before": nil}); r.Status != 200 {
		t.Fatalf("clear not_before: %d %s", r.Status, r.Body)
	}
	r, access := verify(t, st, open, map[string]any{})
	if r.Status != 200 {
		t.Fatalf("verify after the start was cleared: %d %s", r.Status, r.Body)
	}
	// And postpones it again: the session it gave waits too.
	if r := st.Do(t, "PATCH", "/v1/links/"+open.ID, key, map[string]any{"not_before": start.Format(time.RFC3339)}); r.Status != 200 {
		t.Fatalf("set not_before: %d %s", r.Status, r.Body)
	}
	r = st.Do(t, "GET", open.path()+"/open", access, nil)
	early(r, r.Status, r.Header, "open with a session after the start moved later")

	// A start must come before the expiry, whichever of the two moves.
	for _, c := range []struct {
		method, path string
		body         map[string]any
	}{
		{"POST", "/v1/links", map[string]any{"links": []any{spec(func(s map[string]any) {
			s["not_before"] = time.Now().Add(8 * 24 * time.Hour).UTC().Format(time.RFC3339)
		})}}},
		{"PATCH", "/v1/links/" + open.ID, map[string]any{"not_before": time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)}},
		{"PATCH", "/v1/links/" + open.ID, map[string]any{"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}},
		{"PATCH", "/v1/links/" + open.ID, map[string]any{"not_before": "tomorrow"}},
	} {
		r := st.Do(t, c.method, c.path, key, c.body)
		if r.Status != 400 || r.ErrorCode() != "invalid_not_before" {
			t.Errorf("%s %s %v: %d %s, want 400 invalid_not_before", c.method, c.path, c.body, r.Status, r.Body)
		}
	}
}

// The owner moves the start later while a request is on its way, past the
// service's check: the statement that counts checks it again and counts
// nothing.
func TestStartAndNetworksAreCheckedWhereTheAccessIsCounted(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec())[0]
	ctx := context.Background()
	found, err := st.Store.LinkByTokenHash(ctx, st.Keys.LookupHash(strings.TrimPrefix(l.path(), "/s/")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE links SET not_before = now() + interval '1 hour' WHERE id = $1`, l.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.Store.Access(ctx, link.AccessRequest{Link: found, Actor: events.Actor{Type: "recipient", IP: "192.0.2.1"},
		Opened: &events.OpenedData{TargetID: "report.pdf", GrantID: uuid.Must(uuid.NewV7()).String()}})
	var count int
	if qerr := st.Pool.QueryRow(ctx, `SELECT access_count FROM links WHERE id = $1`, l.ID).Scan(&count); qerr != nil {
		t.Fatal(qerr)
	}
	if err == nil || count != 0 {
		t.Fatalf("an access past the start's new time: err %v, count %d", err, count)
	}

	// The same statement (password verifies and direct opens take it)
	// checks the networks: from outside them it counts nothing either.
	limited := create(t, st, key, spec(func(s map[string]any) { s["allowed_networks"] = []string{"10.0.0.0/8"} }))[0]
	found, err = st.Store.LinkByTokenHash(ctx, st.Keys.LookupHash(strings.TrimPrefix(limited.path(), "/s/")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Store.Access(ctx, link.AccessRequest{Link: found, Actor: events.Actor{Type: "recipient", IP: "192.0.2.1"},
		Opened: &events.OpenedData{TargetID: "report.pdf", GrantID: uuid.Must(uuid.NewV7()).String()}})
	if qerr := st.Pool.QueryRow(ctx, `SELECT access_count FROM links WHERE id = $1`, limited.ID).Scan(&count); qerr != nil {
		t.Fatal(qerr)
	}
	if err == nil || count != 0 {
		t.Fatalf("an access from outside the link's networks: err %v, count %d", err, count)
	}
}
