package link_test

import (
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/link"
)

// An owner's policy only narrows the service's: a longer maximum or a
// higher access limit than the service allows is ignored, open links stay
// forbidden when the service forbids them, and a default past the
// resulting maximum is cut to it.
func TestOwnerPolicyOnlyNarrows(t *testing.T) {
	day := int64(86400)
	svc := link.Policy{MaxExpiry: 30 * 24 * time.Hour, MaxAccessCount: 10, ForbidOpenLinks: true}
	for _, c := range []struct {
		owner link.OwnerPolicy
		want  link.Policy
	}{
		{link.OwnerPolicy{}, svc},
		{link.OwnerPolicy{MaxExpiry: 90 * day, MaxAccessCount: 20}, svc},
		{link.OwnerPolicy{MaxExpiry: 7 * day, MaxAccessCount: 3, DefaultExpiry: day},
			link.Policy{MaxExpiry: 7 * 24 * time.Hour, DefaultExpiry: 24 * time.Hour, MaxAccessCount: 3, ForbidOpenLinks: true}},
		{link.OwnerPolicy{DefaultExpiry: 60 * day},
			link.Policy{MaxExpiry: 30 * 24 * time.Hour, DefaultExpiry: 30 * 24 * time.Hour, MaxAccessCount: 10, ForbidOpenLinks: true}},
	} {
		got := svc.For(c.owner)
		if got.MaxExpiry != c.want.MaxExpiry || got.DefaultExpiry != c.want.DefaultExpiry ||
			got.MaxAccessCount != c.want.MaxAccessCount || got.ForbidOpenLinks != c.want.ForbidOpenLinks {
			t.Errorf("service %+v for owner %+v: %+v, want %+v", svc, c.owner, got, c.want)
		}
	}
	open := link.Policy{MaxExpiry: time.Hour}
	if got := open.For(link.OwnerPolicy{ForbidOpenLinks: true, MaxAccessCount: 4}); !got.ForbidOpenLinks || got.MaxAccessCount != 4 {
		t.Errorf("an owner's own rule on a service without one: %+v", got)
	}
	for _, bad := range []link.OwnerPolicy{
		{MaxExpiry: day, DefaultExpiry: 2 * day},
		{MaxAccessCount: -1},
		{OTP: &link.OTPPolicy{CodeLength: 11}},
		{OTP: &link.OTPPolicy{CodeTTL: 3600}},
	} {
		if bad.Check() == nil {
			t.Errorf("%+v passed Check", bad)
		}
	}
	if err := (link.OwnerPolicy{MaxExpiry: 2 * day, DefaultExpiry: day, OTP: &link.OTPPolicy{CodeLength: 8}}).Check(); err != nil {
		t.Errorf("a good policy: %v", err)
	}
}
