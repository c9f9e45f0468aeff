package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

// While Postgres refuses the api (its database closed to new connections
// and every session of it ended, as in a failover or a restart), each
// request that needs the database is a 503 with Retry-After: error code
// unavailable for the JSON API, a page for a recipient's browser, never a
// 500 and never a 401 for a good key. Nothing is half-written, and once
// Postgres takes connections again the same requests succeed without
// restarting the api.
func TestDatabaseOutageIs503ThenRecovers(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	fresh := st.OwnerKey(t, "never-used-"+t.Name()) // not in the key cache
	l := create(t, st, key, spec())[0]
	ctx := context.Background()
	count := func(q string) int { // only while the database is open
		t.Helper()
		var n int
		if err := st.Pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count(`SELECT count(*) FROM links`)

	reopen := testkit.DatabaseOutage(t, st.Pool.Config().ConnConfig)
	unavailable := func(what string, r testkit.Response) {
		t.Helper()
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s during the outage: %d, Retry-After %q, %s; want 503 with Retry-After", what, r.Status, r.Header.Get("Retry-After"), r.Body)
		}
	}
	// Twice each: the first may meet a pooled connection the server ended,
	// the second needs a new one, which the server refuses.
	for range 2 {
		r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{spec()}})
		unavailable("create", r)
		if r.ErrorCode() != "unavailable" {
			t.Errorf("create during the outage: error code %q, want unavailable", r.ErrorCode())
		}
		unavailable("list", st.Do(t, "GET", "/v1/links", key, nil))
		unavailable("list with a key not yet cached", st.Do(t, "GET", "/v1/links", fresh, nil))
		unavailable("recipient verify", st.Do(t, "POST", l.path()+"/verify", "", map[string]any{}))
		page := st.Do(t, "GET", l.path(), "", nil, "Accept", "text/html")
		unavailable("recipient page", page)
		if !strings.Contains(string(page.Body), "briefly unavailable") {
			t.Errorf("recipient page during the outage does not say so: %s", page.Body)
		}
	}

	reopen()
	var r testkit.Response
	testkit.Eventually(t, 15*time.Second, func() bool {
		r = st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{spec()}})
		return r.Status == http.StatusCreated
	}, "create after the outage")
	if r := st.Do(t, "GET", "/v1/links", fresh, nil); r.Status != http.StatusOK {
		t.Errorf("list with the fresh key after the outage: %d %s", r.Status, r.Body)
	}
	if got := count(`SELECT count(*) FROM links`); got != before+1 {
		t.Errorf("%d links after the outage, want %d: a 503 wrote something", got, before+1)
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return count(`SELECT count(*) FROM outbox`) == 0 },
		"the relay publishes again after the outage")
}
