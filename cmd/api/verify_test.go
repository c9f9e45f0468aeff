package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// An owner's offline check, against a running api: verify-audit accepts
// an export as served, accepts a later one as its continuation, and
// refuses one whose history changed in the database.
func TestVerifyAuditAgainstTheRunningAPI(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	ctx := context.Background()
	key := newKey(t, dbURL)
	base, _ := startServe(t, dbURL, natsURL)
	pool, err := postgres.Open(ctx, dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.NewStore(pool, nil)
	seal := func() {
		testkit.Eventually(t, 30*time.Second, func() bool {
			n, err := store.SealAudit(ctx, 1000)
			lag, lerr := store.AuditSealLag(ctx)
			return err == nil && lerr == nil && n == 0 && lag == 0
		}, "all sealed")
	}
	call := func(method, path, body string) []byte {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, r.StatusCode, b)
		}
		return b
	}
	var created struct{ Links []struct{ ID string } }
	if err := json.Unmarshal(call("POST", "/v1/links", `{"links":[{"targets":[{"id":"a","type":"file","url":"https://example.com/a"}],
		"link_type":"view","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}]}`), &created); err != nil {
		t.Fatal(err)
	}
	id := created.Links[0].ID
	dir := t.TempDir()
	save := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, call("GET", "/v1/links/"+id+"/audit/export", ""), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keys := base + "/.well-known/sharelinks-audit-keys.json"
	seal()
	old := save("old.json")
	call("PATCH", "/v1/links/"+id, `{"title":"Q3 close"}`)
	seal()
	later := save("new.json")
	var out bytes.Buffer
	if err := run(ctx, []string{"verify-audit", "-keys", keys, "-previous", old, later}, &out); err != nil {
		t.Fatalf("verify-audit: %v", err)
	}
	if !strings.Contains(out.String(), "2 sealed events") || !strings.Contains(out.String(), "extends the earlier export") {
		t.Fatalf("output: %s", out.String())
	}
	if _, err := pool.Exec(ctx, `UPDATE audit_events SET data = '{}' WHERE link_id = $1 AND type = 'link.updated'`, id); err != nil {
		t.Fatal(err)
	}
	edited := save("edited.json")
	if err := run(ctx, []string{"verify-audit", "-keys", keys, edited}, io.Discard); !errors.Is(err, evidence.ErrTampered) {
		t.Fatalf("an edited trail: %v", err)
	}
	if err := run(ctx, []string{"verify-audit", edited}, io.Discard); err == nil {
		t.Fatal("verify-audit without -keys succeeded")
	}
}
