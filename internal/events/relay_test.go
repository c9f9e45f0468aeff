package events_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/events"
)

func TestSplitSweep(t *testing.T) {
	const (
		a = `{"id":"019ab3c2-0000-7000-8000-000000000001","type":"link.expired","actor":{"type":"system"},"data":{}}`
		b = `{"id":"019ab3c2-0000-7000-8000-000000000002","type":"link.expired","actor":{"type":"system"},"data":{}}`
	)
	for _, tc := range []struct {
		name    string
		payload string
		ids     []string // nil: not in the sweep framing
	}{
		{"sweep framing", "[" + a + ",\n" + b + "]", []string{"019ab3c2-0000-7000-8000-000000000001", "019ab3c2-0000-7000-8000-000000000002"}},
		{"one event", "[" + a + "]", []string{"019ab3c2-0000-7000-8000-000000000001"}},
		{"compact array", "[" + a + "," + b + "]", nil},
		{"single object", a, nil},
		{"id not first", `[{"type":"link.expired","id":"019ab3c2-0000-7000-8000-000000000001"}]`, nil},
		{"id not a uuid", `[{"id":"019ab3c2-0000-7000-8000-00000000000Z","type":"x"}]`, nil},
		{"empty array", "[]", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			elems, ids, ok := events.SplitSweep([]byte(tc.payload))
			if ok != (tc.ids != nil) {
				t.Fatalf("ok = %v, want %v", ok, tc.ids != nil)
			}
			if !ok {
				return
			}
			if strings.Join(ids, " ") != strings.Join(tc.ids, " ") || len(elems) != len(ids) {
				t.Fatalf("ids %v (%d elements), want %v", ids, len(elems), tc.ids)
			}
			for i, el := range elems {
				var e struct{ ID string }
				if err := json.Unmarshal(el, &e); err != nil || e.ID != ids[i] {
					t.Fatalf("element %d %q: %v (id %q)", i, el, err, e.ID)
				}
			}
		})
	}
}
