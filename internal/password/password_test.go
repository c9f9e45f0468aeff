package password_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/password"
)

func TestHashVerify(t *testing.T) {
	t.Parallel()
	h := password.NewHasher(password.Params{Memory: 1024, Time: 1, Threads: 1}, 2)
	ctx := context.Background()
	enc, err := h.Hash(ctx, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=1024,t=1,p=1$") || strings.Contains(enc, "horse") {
		t.Fatalf("encoding %q", enc)
	}
	again, _ := h.Hash(ctx, "correct horse battery")
	if again == enc {
		t.Fatal("no salt")
	}
	if ok, err := h.Verify(ctx, enc, "correct horse battery"); !ok || err != nil {
		t.Fatalf("verify: %v %v", ok, err)
	}
	if ok, _ := h.Verify(ctx, enc, "correct horse batterY"); ok {
		t.Fatal("wrong password verified")
	}
	// Hashes made with other parameters still verify (parameters are in the hash).
	strong := password.NewHasher(password.Default, 1)
	if ok, _ := strong.Verify(ctx, enc, "correct horse battery"); !ok {
		t.Fatal("cross-parameter verify failed")
	}
	if _, err := h.Verify(ctx, "$2a$10$notargon", "x"); err == nil {
		t.Fatal("foreign hash accepted")
	}
}
