// Package secret derives every key the service needs from SHARELINKS_SECRET
// with HKDF, so all instances agree without sharing anything else, and holds
// the primitives that use them: token generation, lookup hashes, sealing.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// MinBytes is the minimum length of the decoded master secret.
const MinBytes = 32

// Keys are the purpose-bound keys derived from the master secret.
type Keys struct {
	lookup    []byte // HMAC key for link-token and access-token lookup hashes
	otp       []byte // HMAC key (pepper) for OTP code hashes
	request   []byte // HMAC key for idempotent requests' fingerprints
	aead      cipher.AEAD
	grantSeed []byte // Ed25519 seed for grant signing
	auditSeed []byte // Ed25519 seed for signed audit-chain heads
}

// Parse decodes a base64 (std or URL, padded or not) master secret and
// derives the keys.
func Parse(b64 string) (*Keys, error) {
	b64 = strings.TrimSpace(b64)
	if b64 == "" {
		return nil, errors.New("is empty: generate one with `head -c 32 /dev/urandom | base64`")
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(b64); err == nil {
			break
		}
	}
	if err != nil {
		return nil, errors.New("is not valid base64")
	}
	if len(raw) < MinBytes {
		return nil, fmt.Errorf("decodes to %d bytes, need at least %d", len(raw), MinBytes)
	}
	return derive(raw)
}

func derive(master []byte) (*Keys, error) {
	key := func(info string) ([]byte, error) {
		return hkdf.Key(sha256.New, master, []byte("sharelinks"), "sharelinks/v1/"+info, 32)
	}
	k := &Keys{}
	var err error
	if k.lookup, err = key("lookup"); err != nil {
		return nil, fmt.Errorf("derive lookup key: %w", err)
	}
	if k.otp, err = key("otp"); err != nil {
		return nil, fmt.Errorf("derive otp key: %w", err)
	}
	if k.request, err = key("request-fingerprint"); err != nil {
		return nil, fmt.Errorf("derive request key: %w", err)
	}
	if k.grantSeed, err = key("grant-ed25519"); err != nil {
		return nil, fmt.Errorf("derive grant key: %w", err)
	}
	if k.auditSeed, err = key("audit-ed25519"); err != nil {
		return nil, fmt.Errorf("derive audit key: %w", err)
	}
	enc, err := key("token-encryption")
	if err != nil {
		return nil, fmt.Errorf("derive encryption key: %w", err)
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return k, nil
}

// Generate returns a fresh master secret, base64-encoded (for dev stacks).
func Generate() string {
	b := make([]byte, MinBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.StdEncoding.EncodeToString(b)
}

// NewToken returns a URL-safe random token with the given prefix carrying
// 192 bits from crypto/rand (above the 128 bits ASVS asks for).
func NewToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// LookupHash is the keyed hash under which a high-entropy token is stored and
// looked up. A database dump alone cannot turn it back into a token.
func (k *Keys) LookupHash(token string) []byte {
	m := hmac.New(sha256.New, k.lookup)
	m.Write([]byte(token))
	return m.Sum(nil)
}

// CodeHash is the keyed hash under which a one-time code is stored, bound
// to its link by the link's token hash (LookupHash of the token). A verify
// knows the token and the code, so it can compute the hash before reading
// anything and let one statement compare, charge and count. The challenge
// is not bound in: only a link's newest challenge is ever compared, and a
// new code is drawn for each.
func (k *Keys) CodeHash(tokenHash []byte, code string) []byte {
	m := hmac.New(sha256.New, k.otp)
	m.Write([]byte("link-code\x00")) // apart from OTPHash's inputs, which start with a challenge id
	m.Write(tokenHash)
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

// Fingerprint is the keyed hash of a request that an Idempotency-Key
// names: retries compare it, and a database dump cannot test guesses at
// what it covered (a create can carry a password). Each part is length-
// prefixed, so no two different lists of parts hash alike.
func (k *Keys) Fingerprint(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, k.request)
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// NewBlind returns a fresh random value for blinding a comparison that
// cannot run in constant time (see link.CodeAttempt).
func NewBlind() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

// OTPHash is the earlier, challenge-bound form of a code's hash: notifiers
// from before CodeHash stored it, and their codes stay valid until they
// expire (minutes), so verifies still accept it.
func (k *Keys) OTPHash(challengeID, code string) []byte {
	m := hmac.New(sha256.New, k.otp)
	m.Write([]byte(challengeID))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

// Equal compares two digests in constant time.
func Equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// Seal encrypts plaintext with AES-256-GCM, binding it to aad (e.g. the row id).
func (k *Keys) Seal(plaintext, aad []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plaintext, aad)
}

// Open decrypts what Seal produced with the same aad.
func (k *Keys) Open(sealed, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	pt, err := k.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: %w", err)
	}
	return pt, nil
}

// GrantKey is the Ed25519 private key grants are signed with.
func (k *Keys) GrantKey() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(k.grantSeed) }

// AuditKey is the Ed25519 private key audit exports' heads are signed with.
func (k *Keys) AuditKey() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(k.auditSeed) }

// APIKeyHash hashes an API key for storage. Keys carry 192 random bits, so an
// unsalted SHA-256 is enough (NIST 800-63B 5.1.2.2); it is deliberately not
// keyed by the master secret so `api keys` commands and a rotated secret agree.
func APIKeyHash(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}
