package testkit

import (
	"io"
	"net/http"
	"testing"
)

// Metrics returns the text a binary serves at baseURL + "/metrics".
func Metrics(tb testing.TB, baseURL string) string {
	tb.Helper()
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s/metrics: %d %s", baseURL, resp.StatusCode, raw)
	}
	return string(raw)
}
