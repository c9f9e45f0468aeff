// Package grant issues the short-lived signed grants a recipient presents to
// the owner's storage, and publishes the keys that verify them (JWKS).
package grant

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Claims are the grant's claims beyond the registered ones.
type Claims struct {
	LinkID string   `json:"lid"`
	Ops    []string `json:"ops"`
}

// Ops returns the operations a link type allows.
func Ops(linkType string) []string {
	switch linkType {
	case "view":
		return []string{"view"}
	case "download":
		return []string{"view", "download"}
	case "upload":
		return []string{"upload"}
	case "editor":
		return []string{"view", "download", "upload", "rename", "delete"}
	}
	return nil
}

// Signer signs grants with one Ed25519 key.
type Signer struct {
	issuer   string
	lifetime time.Duration
	kid      string
	pub      ed25519.PublicKey
	signer   jose.Signer
	jwks     []byte
}

// NewSigner builds a signer. The key id is derived from the public key, so
// every instance deriving the same key publishes the same kid.
func NewSigner(key ed25519.PrivateKey, issuer string, lifetime time.Duration) (*Signer, error) {
	pub := key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("grant signer: %w", err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: kid, Algorithm: string(jose.EdDSA), Use: "sig"}}}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("marshal jwks: %w", err)
	}
	if lifetime <= 0 {
		lifetime = 60 * time.Second
	}
	return &Signer{issuer: issuer, lifetime: lifetime, kid: kid, pub: pub, signer: s, jwks: jwks}, nil
}

// Issued is a signed grant and its id.
type Issued struct {
	Token     string
	ID        string
	ExpiresAt time.Time
}

// signed is a grant's payload: the registered claims and ours, flat.
type signed struct {
	Issuer   string           `json:"iss"`
	Subject  string           `json:"sub"`
	ID       string           `json:"jti"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	Expiry   *jwt.NumericDate `json:"exp"`
	Claims
}

// Sign issues a grant for one target of one link.
func (s *Signer) Sign(now time.Time, id, targetID, linkID, linkType string) (Issued, error) {
	exp := now.Add(s.lifetime)
	// One marshal of one struct: jwt.Signed's builder would marshal the
	// claims, decode them into a map and marshal that again, which cost
	// as much as the Ed25519 signature on every open.
	payload, err := json.Marshal(signed{
		Issuer: s.issuer, Subject: targetID, ID: id,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
		Claims: Claims{LinkID: linkID, Ops: Ops(linkType)},
	})
	if err != nil {
		return Issued{}, fmt.Errorf("marshal grant claims: %w", err)
	}
	sig, err := s.signer.Sign(payload)
	if err != nil {
		return Issued{}, fmt.Errorf("sign grant: %w", err)
	}
	tok, err := sig.CompactSerialize()
	if err != nil {
		return Issued{}, fmt.Errorf("serialize grant: %w", err)
	}
	return Issued{Token: tok, ID: id, ExpiresAt: exp}, nil
}

// JWKS is the JSON Web Key Set with the public key.
func (s *Signer) JWKS() []byte { return s.jwks }

// KeyID is the kid in every grant's header.
func (s *Signer) KeyID() string { return s.kid }
