package evidence_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/evidence"
)

const linkID = "0193a1c4-0000-7000-8000-000000000001"

func signer(t *testing.T, seed byte) *evidence.Signer {
	t.Helper()
	s, err := evidence.NewSigner(ed25519.NewKeyFromSeed(make32(seed)), "https://share.example")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func make32(b byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return k
}

// export builds a signed export of n events the way the api does.
func export(t *testing.T, s *evidence.Signer, n int) evidence.Export {
	t.Helper()
	e := evidence.Export{Format: evidence.Format, LinkID: linkID, OwnerID: "owner-1", ExportedAt: time.Now().UTC(),
		Genesis: hex.EncodeToString(evidence.Genesis(linkID))}
	prev := evidence.Genesis(linkID)
	for i := 1; i <= n; i++ {
		rec := fmt.Sprintf(`{"id": "ev-%d", "type": "link.opened", "data": {"target_id": "t%d"}}`, i, i)
		prev = evidence.Next(prev, rec)
		e.Entries = append(e.Entries, evidence.Entry{Seq: int64(i), Record: rec, Hash: hex.EncodeToString(prev)})
	}
	e.Head = evidence.Head{Seq: int64(n), Hash: hex.EncodeToString(prev), SealedAt: time.Now().UTC()}
	sig, err := s.Sign(e.LinkID, e.OwnerID, e.Head, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.Signature = sig
	return e
}

// forge replaces entry i's record and re-hashes the chain from there, as
// someone with the database and this package could; it returns the new
// end of the chain.
func forge(e *evidence.Export, i int) string {
	e.Entries[i].Record = `{"id": "forged"}`
	prev := evidence.Genesis(linkID)
	for j := range e.Entries {
		prev = evidence.Next(prev, e.Entries[j].Record)
		e.Entries[j].Hash = hex.EncodeToString(prev)
	}
	return hex.EncodeToString(prev)
}

func marshal(t *testing.T, e evidence.Export) []byte {
	t.Helper()
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifyAcceptsAnUntouchedExport(t *testing.T) {
	s := signer(t, 1)
	for _, n := range []int{0, 1, 5} {
		head, err := evidence.Verify(marshal(t, export(t, s, n)), s.Keys())
		if err != nil {
			t.Fatalf("%d events: %v", n, err)
		}
		if head.Seq != int64(n) || head.LinkID != linkID || head.Issuer != "https://share.example" {
			t.Fatalf("%d events: head %+v", n, head)
		}
	}
}

// Every way of changing a sealed history must fail, each for its reason.
func TestVerifyRejectsEveryChange(t *testing.T) {
	s := signer(t, 1)
	cases := map[string]struct {
		change func(e *evidence.Export)
		want   string
	}{
		"a record edited": {func(e *evidence.Export) {
			e.Entries[2].Record = strings.Replace(e.Entries[2].Record, "t3", "t9", 1)
		}, "was changed"},
		"an entry removed": {func(e *evidence.Export) {
			e.Entries = append(e.Entries[:1], e.Entries[2:]...)
		}, "missing or out of order"},
		"two entries swapped": {func(e *evidence.Export) {
			e.Entries[1], e.Entries[2] = e.Entries[2], e.Entries[1]
		}, "missing or out of order"},
		"the tail cut": {func(e *evidence.Export) { e.Entries = e.Entries[:3] }, "not at the signed head"},
		"the chain re-hashed after an edit, head kept": {func(e *evidence.Export) { forge(e, 1) }, "not at the signed head"},
		"the head moved to a re-hashed chain": {func(e *evidence.Export) {
			e.Head.Hash = forge(e, 1)
		}, "is not the document's"},
		"the sealing time changed": {func(e *evidence.Export) {
			e.Head.SealedAt = e.Head.SealedAt.Add(-time.Hour)
		}, "is not the document's"},
		"another link's genesis": {func(e *evidence.Export) {
			e.Genesis = hex.EncodeToString(evidence.Genesis("another"))
		}, "genesis"},
		"a signature by another key": {func(e *evidence.Export) {
			e.Signature, _ = signer(t, 2).Sign(e.LinkID, e.OwnerID, e.Head, time.Now())
		}, "not in the key set"},
		"a mangled signature": {func(e *evidence.Export) { e.Signature = e.Signature[:len(e.Signature)-4] + "AAAA" }, "signature"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := export(t, s, 5)
			c.change(&e)
			_, err := evidence.Verify(marshal(t, e), s.Keys())
			if !errors.Is(err, evidence.ErrTampered) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrTampered saying %q", err, c.want)
			}
		})
	}
}

// A head signed by the same key under another key id (a grant's, say)
// must not verify: the key set names the audit key only.
func TestVerifyNeedsTheAuditKeySet(t *testing.T) {
	s := signer(t, 1)
	other := signer(t, 3)
	if _, err := evidence.Verify(marshal(t, export(t, s, 2)), other.Keys()); !errors.Is(err, evidence.ErrTampered) {
		t.Fatalf("verified against another key set: %v", err)
	}
}

func TestExtendsAcceptsGrowthAndRejectsRewrites(t *testing.T) {
	s := signer(t, 1)
	earlier, later := export(t, s, 3), export(t, s, 6)
	if err := evidence.Extends(marshal(t, earlier), marshal(t, later)); err != nil {
		t.Fatalf("growth: %v", err)
	}
	if err := evidence.Extends(marshal(t, later), marshal(t, earlier)); !errors.Is(err, evidence.ErrTampered) {
		t.Fatalf("shrink: %v", err)
	}
	// A chain rewritten end to end verifies on its own, but not as the
	// continuation of what the owner kept.
	rewritten := export(t, s, 6)
	rewritten.Head.Hash = forge(&rewritten, 0)
	rewritten.Signature, _ = s.Sign(rewritten.LinkID, rewritten.OwnerID, rewritten.Head, time.Now())
	if _, err := evidence.Verify(marshal(t, rewritten), s.Keys()); err != nil {
		t.Fatalf("the rewritten export should verify on its own: %v", err)
	}
	if err := evidence.Extends(marshal(t, earlier), marshal(t, rewritten)); !errors.Is(err, evidence.ErrTampered) {
		t.Fatalf("rewrite: %v", err)
	}
}

// The record is the format's contract with every verifier that re-reads
// it: exact bytes, valid JSON, the time in UTC to the microsecond.
func TestRecordIsFixed(t *testing.T) {
	at := time.Date(2026, 12, 3, 14, 5, 6, 7_000, time.FixedZone("CET", 3600))
	got := evidence.Record("e1", "o1", "l1", `link."odd"`, at, `{"ip": "192.0.2.1", "type": "recipient"}`, `{}`)
	want := `{"id":"e1","owner_id":"o1","link_id":"l1","type":"link.\"odd\"","occurred_at":"2026-12-03T13:05:06.000007Z",` +
		`"actor":{"ip": "192.0.2.1", "type": "recipient"},"data":{}}`
	if got != want || !json.Valid([]byte(got)) {
		t.Fatalf("record\n got %s\nwant %s", got, want)
	}
}
