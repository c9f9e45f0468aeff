package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// A burst of 503s is one line, and the next line, an interval later,
// counts what the first did not show.
func TestSampledLogWritesOneLinePerIntervalWithTheCount(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	l := sampledLog{every: rate.Sometimes{First: 1, Interval: 200 * time.Millisecond}}
	for range 1000 {
		l.warn(context.Background(), log, "answered 503")
	}
	time.Sleep(250 * time.Millisecond)
	l.warn(context.Background(), log, "answered 503")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 1001 answers, want 2:\n%s", len(lines), buf.String())
	}
	var counts []int
	for _, ln := range lines {
		var v struct{ Answers int }
		if err := json.Unmarshal([]byte(ln), &v); err != nil {
			t.Fatal(err)
		}
		counts = append(counts, v.Answers)
	}
	if counts[0] != 1 || counts[1] != 1000 {
		t.Fatalf("answers per line %v, want [1 1000]", counts)
	}
}
