// Package evidence makes a link's audit trail tamper-evident: the reaper
// seals recorded events into one hash chain per link, and an export of
// that chain carries a signed head anyone can check offline with the
// published key. A later change to a sealed event, a removed or reordered
// one, breaks the chain; a rewritten chain contradicts every head its
// owner kept from before (Extends).
package evidence

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Format names the export document and the hashing below; a change to
// either is a new version.
const Format = "sharelinks-audit-export/v1"

// headType is the JWS "typ" of a signed head, so a head can never pass for
// a grant (which is signed with another key anyway).
const headType = "sharelinks-audit-head+jwt"

// Genesis is the hash a link's chain starts from: bound to the link, so
// one link's events cannot be passed off as another's.
func Genesis(linkID string) []byte {
	h := sha256.Sum256([]byte(Format + "\x00" + linkID))
	return h[:]
}

// Next is the chain's step: the hash of the previous hash and the event's
// record, the exact bytes the export carries.
func Next(prev []byte, record string) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write([]byte(record))
	return h.Sum(nil)
}

// Record is an event's record, the bytes its chain hash covers: its
// fields in a fixed order with no spaces, the time in UTC to the
// microsecond (what Postgres keeps), actor and data as the JSON text
// Postgres gives for them (jsonb keeps keys in one order and one
// spacing, so the same values always give the same text). The sealer and
// the export both build it here.
func Record(id, ownerID, linkID, typ string, occurredAt time.Time, actor, data string) string {
	b := make([]byte, 0, 192+len(actor)+len(data))
	field := func(name, value string) {
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		q, _ := json.Marshal(value) // a string always marshals
		b = append(b, q...)
		b = append(b, ',')
	}
	b = append(b, '{')
	field("id", id)
	field("owner_id", ownerID)
	field("link_id", linkID)
	field("type", typ)
	field("occurred_at", occurredAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	b = append(b, `"actor":`...)
	b = append(b, actor...)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, '}')
	return string(b)
}

// Entry is one sealed event: its place in the link's chain, its record
// (canonical JSON of the event, hashed as is) and the chain hash after it.
type Entry struct {
	Seq    int64  `json:"seq"`
	Record string `json:"record"`
	Hash   string `json:"hash"`
}

// Head is where a chain stood when exported.
type Head struct {
	Seq      int64     `json:"seq"`
	Hash     string    `json:"hash"`
	SealedAt time.Time `json:"sealed_at,omitzero"`
}

// Export is the document GET /v1/links/{id}/audit/export answers: every
// sealed event of the link, the head, and the head signed.
type Export struct {
	Format     string    `json:"format"`
	LinkID     string    `json:"link_id"`
	OwnerID    string    `json:"owner_id"`
	ExportedAt time.Time `json:"exported_at"`
	Genesis    string    `json:"genesis"`
	Entries    []Entry   `json:"entries"`
	Head       Head      `json:"head"`
	// Unsealed counts the link's events recorded but not sealed yet (the
	// reaper seals within its interval); they are in the next export.
	Unsealed  int64  `json:"unsealed"`
	Signature string `json:"signature"`
}

// HeadClaims are what a signature covers.
type HeadClaims struct {
	Issuer   string    `json:"iss"`
	LinkID   string    `json:"lid"`
	OwnerID  string    `json:"oid"`
	Seq      int64     `json:"seq"`
	Hash     string    `json:"head"`
	SealedAt time.Time `json:"sealed_at,omitzero"`
	IssuedAt int64     `json:"iat"`
}

// Signer signs export heads with one Ed25519 key, published as its own
// key set (not the grants' JWKS, so storage that accepts grants never
// sees this key).
type Signer struct {
	issuer string
	signer jose.Signer
	keys   []byte
}

// NewSigner builds a signer; the key id derives from the public key, so
// every api instance publishes the same one.
func NewSigner(key ed25519.PrivateKey, issuer string) (*Signer, error) {
	pub := key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	kid := "audit-" + hex.EncodeToString(sum[:8])
	opts := (&jose.SignerOptions{}).WithType(headType).WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("audit signer: %w", err)
	}
	keys, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: kid, Algorithm: string(jose.EdDSA), Use: "sig"}}})
	if err != nil {
		return nil, fmt.Errorf("marshal audit keys: %w", err)
	}
	return &Signer{issuer: issuer, signer: s, keys: keys}, nil
}

// Keys is the JSON Web Key Set that verifies signed heads.
func (s *Signer) Keys() []byte { return s.keys }

// Sign signs a head of a link's chain.
func (s *Signer) Sign(linkID, ownerID string, h Head, now time.Time) (string, error) {
	payload, err := json.Marshal(HeadClaims{Issuer: s.issuer, LinkID: linkID, OwnerID: ownerID,
		Seq: h.Seq, Hash: h.Hash, SealedAt: h.SealedAt, IssuedAt: now.Unix()})
	if err != nil {
		return "", fmt.Errorf("marshal head: %w", err)
	}
	sig, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign head: %w", err)
	}
	return sig.CompactSerialize()
}

// ErrTampered is wrapped by every verification failure that means the
// document does not match what was sealed and signed.
var ErrTampered = errors.New("audit export does not verify")

func tampered(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTampered, fmt.Sprintf(format, args...))
}

// Verify checks an export against the published key set: the signature
// over the head, and the chain from the link's genesis through every
// entry to that head. It returns the verified head's claims.
func Verify(doc []byte, keySet []byte) (HeadClaims, error) {
	var e Export
	if err := json.Unmarshal(doc, &e); err != nil {
		return HeadClaims{}, fmt.Errorf("read export: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(keySet, &set); err != nil {
		return HeadClaims{}, fmt.Errorf("read key set: %w", err)
	}
	if e.Format != Format {
		return HeadClaims{}, fmt.Errorf("format %q is not %q", e.Format, Format)
	}
	claims, err := verifySignature(e.Signature, set)
	if err != nil {
		return HeadClaims{}, err
	}
	if claims.LinkID != e.LinkID || claims.OwnerID != e.OwnerID || claims.Seq != e.Head.Seq || claims.Hash != e.Head.Hash ||
		!claims.SealedAt.Equal(e.Head.SealedAt) {
		return claims, tampered("the signed head (link %s, seq %d, %s) is not the document's (link %s, seq %d, %s)",
			claims.LinkID, claims.Seq, claims.Hash, e.LinkID, e.Head.Seq, e.Head.Hash)
	}
	prev := Genesis(e.LinkID)
	if e.Genesis != hex.EncodeToString(prev) {
		return claims, tampered("genesis is not this link's")
	}
	for i, en := range e.Entries {
		if en.Seq != int64(i)+1 {
			return claims, tampered("entry %d has seq %d: an event is missing or out of order", i+1, en.Seq)
		}
		prev = Next(prev, en.Record)
		if hex.EncodeToString(prev) != en.Hash {
			return claims, tampered("entry %d does not hash to its recorded hash: the event was changed", en.Seq)
		}
	}
	if int64(len(e.Entries)) != e.Head.Seq || hex.EncodeToString(prev) != e.Head.Hash {
		return claims, tampered("the entries end at seq %d, %x, not at the signed head (seq %d, %s)",
			len(e.Entries), prev, e.Head.Seq, e.Head.Hash)
	}
	return claims, nil
}

func verifySignature(token string, set jose.JSONWebKeySet) (HeadClaims, error) {
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return HeadClaims{}, tampered("signature: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return HeadClaims{}, tampered("signature: want one, got %d", len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != headType {
		return HeadClaims{}, tampered("signature: typ %q is not %q", typ, headType)
	}
	keys := set.Key(h.KeyID)
	if len(keys) == 0 {
		return HeadClaims{}, tampered("signature: key %q is not in the key set", h.KeyID)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		return HeadClaims{}, tampered("signature: %v", err)
	}
	var c HeadClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return HeadClaims{}, tampered("signed head: %v", err)
	}
	return c, nil
}

// Extends checks that a later export of a link continues an earlier one:
// every entry the earlier covered is in the later, unchanged. Each must
// have passed Verify. A chain rewritten after the earlier export (even
// re-hashed end to end by someone with the database) fails here.
func Extends(earlier, later []byte) error {
	var a, b Export
	if err := json.Unmarshal(earlier, &a); err != nil {
		return fmt.Errorf("read earlier export: %w", err)
	}
	if err := json.Unmarshal(later, &b); err != nil {
		return fmt.Errorf("read later export: %w", err)
	}
	if a.LinkID != b.LinkID {
		return fmt.Errorf("the exports are of different links (%s, %s)", a.LinkID, b.LinkID)
	}
	if b.Head.Seq < a.Head.Seq {
		return tampered("the later export ends at seq %d, before the earlier one's %d: sealed events were removed", b.Head.Seq, a.Head.Seq)
	}
	for i, en := range a.Entries {
		if i >= len(b.Entries) || b.Entries[i] != en {
			return tampered("seq %d differs from the earlier export: sealed history was rewritten", en.Seq)
		}
	}
	return nil
}
