package grant_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sharelinks/sharelinks/internal/grant"
)

func newSigner(t testing.TB) (*grant.Signer, ed25519.PublicKey) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := grant.NewSigner(key, "https://share.example.com", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

// A grant is a compact JWS that verifies with the published key and
// carries the registered claims and ours.
func TestSignedGrantVerifies(t *testing.T) {
	t.Parallel()
	s, pub := newSigner(t)
	now := time.Unix(1_800_000_000, 0)
	g, err := s.Sign(now, "grant-1", "report.pdf", "link-1", "download")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(g.Token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if h := tok.Headers[0]; h.KeyID != s.KeyID() || h.ExtraHeaders[jose.HeaderType] != "JWT" {
		t.Fatalf("header %+v", h)
	}
	var std jwt.Claims
	var ours grant.Claims
	if err := tok.Claims(pub, &std, &ours); err != nil {
		t.Fatal(err)
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: "https://share.example.com", Subject: "report.pdf", ID: "grant-1",
		Time: now.Add(30 * time.Second)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !std.Expiry.Time().Equal(now.Add(time.Minute)) || !g.ExpiresAt.Equal(now.Add(time.Minute)) || !std.IssuedAt.Time().Equal(now) {
		t.Fatalf("times: %+v, expires %s", std, g.ExpiresAt)
	}
	if ours.LinkID != "link-1" || len(ours.Ops) != 2 || ours.Ops[1] != "download" {
		t.Fatalf("claims %+v", ours)
	}
	_, otherPub := newSigner(t)
	if err := tok.Claims(otherPub, &std); err == nil {
		t.Fatal("verified with another key")
	}
}

// BenchmarkSign is the cost of issuing one grant (every open pays it).
func BenchmarkSign(b *testing.B) {
	s, _ := newSigner(b)
	now := time.Now()
	for b.Loop() {
		if _, err := s.Sign(now, "0190a2b4-0000-7000-8000-000000000000", "report.pdf", "0190a2b4-0000-7000-8000-000000000001", "view"); err != nil {
			b.Fatal(err)
		}
	}
}
