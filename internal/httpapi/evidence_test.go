package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

func sealAudit(tb testing.TB, st *testkit.Stack) {
	tb.Helper()
	testkit.Eventually(tb, 30e9, func() bool {
		n, err := st.Store.SealAudit(context.Background(), 5000)
		if err != nil {
			tb.Fatal(err)
		}
		lag, err := st.Store.AuditSealLag(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		return n == 0 && lag == 0
	}, "audit events still unsealed")
}

func exportAudit(t *testing.T, st *testkit.Stack, key, linkID string) (evidence.Export, []byte) {
	t.Helper()
	r := st.Do(t, "GET", "/v1/links/"+linkID+"/audit/export", key, nil)
	if r.Status != 200 {
		t.Fatalf("export: %d %s", r.Status, r.Body)
	}
	var e evidence.Export
	r.JSON(t, &e)
	return e, r.Body
}

// The whole path an owner takes: events happen, the reaper seals them,
// the export verifies offline with the published keys; then someone with
// the database edits an event, and the next export no longer verifies.
func TestAuditExportVerifiesAndShowsTampering(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	l := create(t, st, key, spec(withPassword("correct horse battery")))[0]
	if r, _ := verify(t, st, l, map[string]string{"password": "wrong wrong wrong"}); r.Status != 401 {
		t.Fatal(r.Status)
	}
	r, access := verify(t, st, l, map[string]string{"password": "correct horse battery"})
	if r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := st.Do(t, "GET", l.path()+"/open", access, nil); r.Status != 302 {
		t.Fatal(r.Status)
	}
	sealAudit(t, st)
	keys := st.Do(t, "GET", "/.well-known/sharelinks-audit-keys.json", "", nil)
	if keys.Status != 200 {
		t.Fatal(keys.Status)
	}
	if strings.Contains(string(st.Do(t, "GET", "/.well-known/jwks.json", "", nil).Body), "audit-") {
		t.Fatal("the audit key is in the grants' JWKS: storage would accept what it signs")
	}

	first, raw := exportAudit(t, st, key, l.ID)
	head, err := evidence.Verify(raw, keys.Body)
	if err != nil {
		t.Fatalf("untouched export: %v", err)
	}
	var types []string
	for _, e := range first.Entries {
		var rec struct {
			Type   string `json:"type"`
			LinkID string `json:"link_id"`
		}
		if err := json.Unmarshal([]byte(e.Record), &rec); err != nil || rec.LinkID != l.ID {
			t.Fatalf("record %q: %v", e.Record, err)
		}
		types = append(types, rec.Type)
	}
	if got := strings.Join(types, ","); got != "link.created,link.verify_failed,link.verified,link.opened" || head.Seq != 4 || first.Unsealed != 0 {
		t.Fatalf("chain %s, head seq %d, unsealed %d", got, head.Seq, first.Unsealed)
	}

	// A new event is in the trail at once and in the chain after sealing;
	// meanwhile the export still verifies and says what is pending.
	if r := st.Do(t, "DELETE", "/v1/links/"+l.ID, key, nil); r.Status != 200 && r.Status != 204 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	pending, raw := exportAudit(t, st, key, l.ID)
	if _, err := evidence.Verify(raw, keys.Body); err != nil || pending.Unsealed != 1 || pending.Head.Seq != 4 {
		t.Fatalf("with one event pending: %v, unsealed %d, seq %d", err, pending.Unsealed, pending.Head.Seq)
	}
	sealAudit(t, st)
	second, raw2 := exportAudit(t, st, key, l.ID)
	if _, err := evidence.Verify(raw2, keys.Body); err != nil || second.Head.Seq != 5 {
		t.Fatalf("after the revoke: %v, seq %d", err, second.Head.Seq)
	}
	firstRaw, _ := json.Marshal(first)
	if err := evidence.Extends(firstRaw, raw2); err != nil {
		t.Fatalf("the later export does not extend the earlier: %v", err)
	}

	// Someone with the database rewrites what the recipient did.
	if _, err := st.Pool.Exec(context.Background(), `UPDATE audit_events SET actor = jsonb_set(actor, '{ip}', '"203.0.113.9"')
		WHERE link_id = $1 AND type = 'link.opened'`, l.ID); err != nil {
		t.Fatal(err)
	}
	_, raw3 := exportAudit(t, st, key, l.ID)
	if _, err := evidence.Verify(raw3, keys.Body); !errors.Is(err, evidence.ErrTampered) {
		t.Fatalf("an edited event verified: %v", err)
	}
	// And deletes one.
	if _, err := st.Pool.Exec(context.Background(), `DELETE FROM audit_events WHERE link_id = $1 AND type = 'link.verify_failed'`, l.ID); err != nil {
		t.Fatal(err)
	}
	_, raw4 := exportAudit(t, st, key, l.ID)
	if _, err := evidence.Verify(raw4, keys.Body); !errors.Is(err, evidence.ErrTampered) {
		t.Fatalf("a trail with an event deleted verified: %v", err)
	}
}

func TestAuditExportIsTheOwnersOnly(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	other := st.OwnerKey(t, "someone else")
	l := create(t, st, key, spec())[0]
	for _, c := range []struct {
		path, key string
		status    int
		code      string
	}{
		{"/v1/links/" + l.ID + "/audit/export", other, 404, "link_not_found"},
		{"/v1/links/" + l.ID + "/audit/export", "", 401, "invalid_api_key"},
		{"/v1/links/not-a-uuid/audit/export", key, 404, "link_not_found"},
		{"/v1/links/0193a1c4-0000-7000-8000-000000000001/audit/export", key, 404, "link_not_found"},
		{"/v1/links/" + l.ID + "/audit/export?from=3", key, 400, "unknown_parameter"},
	} {
		r := st.Do(t, "GET", c.path, c.key, nil)
		if r.Status != c.status || r.ErrorCode() != c.code {
			t.Errorf("GET %s: %d %s, want %d %s", c.path, r.Status, r.Body, c.status, c.code)
		}
	}
	// Before the reaper seals anything, the export is an empty chain with
	// its events pending, and it verifies.
	e, raw := exportAudit(t, st, key, l.ID)
	keys := st.Do(t, "GET", "/.well-known/sharelinks-audit-keys.json", "", nil).Body
	if _, err := evidence.Verify(raw, keys); err != nil || e.Head.Seq != 0 || e.Unsealed != 1 || len(e.Entries) != 0 {
		t.Fatalf("unsealed export: %v, %+v", err, e)
	}
}

// longChain is a stack whose owner (key) has one link with n recorded
// and sealed events, written straight into the trail.
func longChain(tb testing.TB, n int) (st *testkit.Stack, key, linkID string) {
	tb.Helper()
	st = testkit.NewStack(tb, "", "")
	key = st.OwnerKey(tb, "chain-owner")
	if err := st.Pool.QueryRow(context.Background(), `
		WITH o AS (SELECT id FROM owners WHERE name = 'chain-owner'), l AS (SELECT sharelinks_uuid_v7() AS id),
		ins AS (
			INSERT INTO audit_events (id, owner_id, link_id, type, occurred_at, actor, data)
			SELECT sharelinks_uuid_v7(), o.id, l.id, 'link.opened', now(),
				'{"type":"recipient","ip":"192.0.2.1","user_agent":"Mozilla/5.0"}',
				jsonb_build_object('target_id', 'report.pdf', 'grant_id', gen_random_uuid())
			FROM o, l, generate_series(1, $1)
		)
		SELECT id::text FROM l`, n).Scan(&linkID); err != nil {
		tb.Fatal(err)
	}
	sealAudit(tb, st)
	return st, key, linkID
}

// BenchmarkAuditExportHTTP: one link with 200,000 sealed events exported
// through the api, in events per second of the whole response.
func BenchmarkAuditExportHTTP(b *testing.B) {
	const n = 200_000
	st, key, linkID := longChain(b, n)
	st.Validate = false // the schema check of 200,000 entries would be the benchmark
	b.ResetTimer()
	size := 0
	for range b.N {
		r := st.Do(b, "GET", "/v1/links/"+linkID+"/audit/export", key, nil)
		if r.Status != 200 {
			b.Fatalf("%d %s", r.Status, truncate(r.Body))
		}
		size = len(r.Body)
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(size)/n, "bytes/event")
}

// An export that fails after its 200 (here: its database session is
// killed mid-stream) must not end like a complete one: the client gets a
// broken connection, never a short document that parses.
func TestAuditExportCutMidStreamIsAnError(t *testing.T) {
	t.Parallel()
	st, key, linkID := longChain(t, 100_000)
	ctx := context.Background()
	req, _ := http.NewRequest("GET", st.URL+"/v1/links/"+linkID+"/audit/export", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := st.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	// The headers are out and the rows are streaming: kill the export's
	// database session.
	first := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	var killed int
	if err := st.Pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%audit_seals s JOIN%'`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	if killed == 0 {
		// The client has read 1 kB of some 50 MB: the server is blocked
		// writing, so its session is there to kill.
		t.Fatal("no export session to kill")
	}
	if err == nil {
		var e evidence.Export
		if json.Unmarshal(append(first, rest...), &e) == nil {
			t.Fatalf("a cut export ended as a complete document of %d entries", len(e.Entries))
		}
		t.Fatalf("a cut export ended cleanly after %d bytes (not valid JSON, but no error either)", len(first)+len(rest))
	}
}
