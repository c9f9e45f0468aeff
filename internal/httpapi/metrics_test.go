package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

// A route's 5xx series exist, at zero, from its first request on, so the
// first server error on it is an increase the 5xx alert sees; and a
// method no route knows becomes "other", not a new series per token a
// client makes up.
func TestServerErrorSeriesExistBeforeTheFirstError(t *testing.T) {
	t.Parallel()
	st, key := newStack(t)
	if r := st.Do(t, "GET", "/v1/links", key, nil); r.Status != http.StatusOK {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	for _, m := range []string{"BREW", "XYZZY"} {
		req, err := http.NewRequest(m, st.URL+"/v1/links", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := st.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	text := testkit.Metrics(t, st.URL)
	for _, code := range []string{"500", "502", "503"} {
		want := `sharelinks_http_requests_total{code="` + code + `",method="GET",route="GET /v1/links"} 0`
		if !strings.Contains(text, want) {
			t.Errorf("no %s before any error", want)
		}
	}
	if !strings.Contains(text, `sharelinks_http_requests_total{code="200",method="GET",route="GET /v1/links"} 1`) {
		t.Error("the list request was not counted")
	}
	for _, bad := range []string{`method="BREW"`, `method="XYZZY"`} {
		if strings.Contains(text, bad) {
			t.Errorf("a made-up method became a label value: %s", bad)
		}
	}
	if !strings.Contains(text, `method="other"`) {
		t.Error(`made-up methods are not counted as method="other"`)
	}
}
