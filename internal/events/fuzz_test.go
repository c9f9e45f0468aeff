package events_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/sharelinks/sharelinks/internal/events"
)

// `make test` runs each target's seeds; `make fuzz` fuzzes them.

// What SplitSweep accepts it splits losslessly: the elements, joined back
// in the sweeps' framing, are the payload, and each element is the event
// whose id it returns. What it refuses goes to the JSON parser instead.
func FuzzSplitSweep(f *testing.F) {
	ev := func() []byte {
		raw, _ := json.Marshal(events.Must(events.LinkExpired, uuid.NewString(), uuid.NewString(), events.System, map[string]any{}))
		return raw
	}
	f.Add([]byte("[" + string(ev()) + "]"))
	f.Add([]byte("[" + string(ev()) + ",\n" + string(ev()) + "]"))
	f.Add([]byte("[" + string(ev()) + "," + string(ev()) + "]"))
	f.Add([]byte(`[{"id":"not-a-uuid-at-all-but-thirty-six-x","type":"x"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		elems, ids, ok := events.SplitSweep(payload)
		if !ok {
			return
		}
		if len(elems) != len(ids) || len(elems) == 0 {
			t.Fatalf("%q: %d elements, %d ids", payload, len(elems), len(ids))
		}
		if joined := append(append([]byte("["), bytes.Join(elems, []byte(",\n"))...), ']'); !bytes.Equal(joined, payload) {
			t.Fatalf("%q split into %q: not lossless", payload, elems)
		}
		for i, el := range elems {
			if uuid.Validate(ids[i]) != nil || !bytes.HasPrefix(el, []byte(`{"id":"`+ids[i]+`"`)) {
				t.Fatalf("element %q carries id %q", el, ids[i])
			}
		}
	})
}

// Parse never panics, and an event it accepts has an id, a type and
// version 1, and survives encoding and parsing again.
func FuzzParse(f *testing.F) {
	raw, _ := json.Marshal(events.Must(events.LinkCreated, uuid.NewString(), uuid.NewString(), events.System, map[string]any{"n": 1}))
	f.Add(raw)
	f.Add([]byte(`{"id":"x","type":"link.created","version":2}`))
	f.Add([]byte(`{not json`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := events.Parse(raw)
		if err != nil {
			return
		}
		if e.ID == "" || e.Type == "" || e.Version != 1 {
			t.Fatalf("%q accepted as %+v", raw, e)
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("%q accepted but does not encode: %v", raw, err)
		}
		if e2, err := events.Parse(again); err != nil || e2.ID != e.ID || e2.Type != e.Type {
			t.Fatalf("%q → %s → %+v, %v", raw, again, e2, err)
		}
	})
}
