package secret_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/secret"
)

func TestParseRejectsWeakSecrets(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "not base64!!", "c2hvcnQ="} {
		if _, err := secret.Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKeysAreDeterministicAndPurposeBound(t *testing.T) {
	t.Parallel()
	s := secret.Generate()
	a, err := secret.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := secret.Parse(s)
	other, _ := secret.Parse(secret.Generate())
	if !bytes.Equal(a.LookupHash("tok"), b.LookupHash("tok")) {
		t.Fatal("two instances disagree on lookup hashes")
	}
	if bytes.Equal(a.LookupHash("tok"), other.LookupHash("tok")) {
		t.Fatal("lookup hash does not depend on the secret")
	}
	if bytes.Equal(a.OTPHash("c1", "123456"), a.OTPHash("c2", "123456")) {
		t.Fatal("OTP hash not bound to its challenge")
	}
	if bytes.Equal(a.CodeHash([]byte("t1"), "123456"), a.CodeHash([]byte("t2"), "123456")) {
		t.Fatal("code hash not bound to its link")
	}
	if !bytes.Equal(a.CodeHash([]byte("t1"), "123456"), b.CodeHash([]byte("t1"), "123456")) ||
		bytes.Equal(a.CodeHash([]byte("t1"), "123456"), other.CodeHash([]byte("t1"), "123456")) {
		t.Fatal("code hashes do not derive from the secret")
	}
	if !a.GrantKey().Equal(b.GrantKey()) || a.GrantKey().Equal(other.GrantKey()) {
		t.Fatal("grant keys do not derive from the secret")
	}
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k, _ := secret.Parse(secret.Generate())
	sealed := k.Seal([]byte("token"), []byte("link-1"))
	if bytes.Contains(sealed, []byte("token")) {
		t.Fatal("plaintext visible")
	}
	if pt, err := k.Open(sealed, []byte("link-1")); err != nil || string(pt) != "token" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if _, err := k.Open(sealed, []byte("link-2")); err == nil {
		t.Fatal("opened with another row's aad")
	}
}

func TestNewTokenEntropyAndAlphabet(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		tok := secret.NewToken("slk_")
		if !strings.HasPrefix(tok, "slk_") || len(tok) != 4+32 || strings.ContainsAny(tok[4:], "+/=") {
			t.Fatalf("token %q", tok)
		}
		if seen[tok] {
			t.Fatal("duplicate token")
		}
		seen[tok] = true
	}
}
