package link

import (
	"fmt"
	"time"
)

// OwnerPolicy is what the operator sets for one owner (a tenant: one
// application, or one customer of the operator's): limits that tighten the
// service's for that owner's links, and defaults for them. A zero field
// leaves the service's setting. The owner reads the result (Policy.For) at
// GET /v1/policy.
type OwnerPolicy struct {
	MaxExpiry       int64 `json:"max_expiry,omitempty"`       // seconds; only ever lowers MAX_EXPIRY
	DefaultExpiry   int64 `json:"default_expiry,omitempty"`   // seconds; a spec without expires_at
	MaxAccessCount  int   `json:"max_access_count,omitempty"` // only ever lowers MAX_ACCESS_COUNT
	ForbidOpenLinks bool  `json:"forbid_open_links,omitempty"`
	// OTP are the owner's defaults for how its links' codes work: copied
	// into each code link it makes (under what the link sets itself), so
	// a link keeps the terms it was made with.
	OTP *OTPPolicy `json:"otp,omitempty"`
}

// Check reports whether p is a policy that can be set: positive times, a
// default within the owner's own maximum, OTP fields within their bounds.
func (p OwnerPolicy) Check() error {
	switch {
	case p.MaxExpiry < 0 || p.DefaultExpiry < 0 || p.MaxAccessCount < 0:
		return fmt.Errorf("limits and defaults must be positive (or left out)")
	case p.MaxExpiry > 0 && p.DefaultExpiry > p.MaxExpiry:
		return fmt.Errorf("the default expiry (%s) is past the maximum (%s)", seconds(p.DefaultExpiry), seconds(p.MaxExpiry))
	}
	if p.OTP == nil {
		return nil
	}
	spec := OTPPolicySpec{}
	for _, f := range []struct {
		v   int
		dst **int
	}{{p.OTP.CodeLength, &spec.CodeLength}, {p.OTP.CodeTTL, &spec.CodeTTL}, {p.OTP.MaxAttempts, &spec.MaxAttempts}, {p.OTP.ResendAfter, &spec.ResendAfter}} {
		if f.v != 0 {
			*f.dst = &f.v
		}
	}
	if _, err := spec.validate("otp"); err != nil {
		return err
	}
	return nil
}

func seconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// For is the policy that applies to an owner: the service's, tightened by
// the owner's limits and with the owner's defaults. An owner's policy can
// only narrow what the service allows.
func (p Policy) For(o OwnerPolicy) Policy {
	if d := seconds(o.MaxExpiry); d > 0 && d < p.MaxExpiry {
		p.MaxExpiry = d
	}
	if o.DefaultExpiry > 0 {
		p.DefaultExpiry = seconds(o.DefaultExpiry)
	}
	// A service maximum lowered after an owner's default was set wins.
	p.DefaultExpiry = min(p.DefaultExpiry, p.MaxExpiry)
	if o.MaxAccessCount > 0 && (p.MaxAccessCount == 0 || o.MaxAccessCount < p.MaxAccessCount) {
		p.MaxAccessCount = o.MaxAccessCount
	}
	p.ForbidOpenLinks = p.ForbidOpenLinks || o.ForbidOpenLinks
	return p
}

// withOwnerOTP is a link's own OTP policy (set, or nil) with the owner's
// defaults under it: what the link stores. Nil when neither sets anything,
// so the service's defaults apply as they change.
func withOwnerOTP(own *OTPPolicy, owner *OTPPolicy) *OTPPolicy {
	if owner == nil {
		return own
	}
	out := *owner
	if own != nil {
		for _, f := range []struct{ v, dst *int }{
			{&own.CodeLength, &out.CodeLength}, {&own.CodeTTL, &out.CodeTTL},
			{&own.MaxAttempts, &out.MaxAttempts}, {&own.ResendAfter, &out.ResendAfter},
		} {
			if *f.v != 0 {
				*f.dst = *f.v
			}
		}
	}
	if out == (OTPPolicy{}) {
		return nil
	}
	return &out
}

// EffectivePolicy is what applies to an owner's new links, as the owner
// reads it: the service's settings narrowed by the owner's policy.
type EffectivePolicy struct {
	MaxExpiry       time.Duration
	DefaultExpiry   time.Duration // 0: expires_at is required
	MaxAccessCount  int           // 0: links may be unlimited
	ForbidOpenLinks bool
	OTP             OTPPolicy // the defaults for code links, every field set
}

// Policy is what applies to owner's new links.
func (s *Service) Policy(owner Owner) EffectivePolicy {
	p := s.cfg.Policy.For(owner.Policy)
	return EffectivePolicy{MaxExpiry: p.MaxExpiry, DefaultExpiry: p.DefaultExpiry, MaxAccessCount: p.MaxAccessCount,
		ForbidOpenLinks: p.ForbidOpenLinks, OTP: Link{OTPPolicy: owner.Policy.OTP}.OTPLimits(s.cfg.OTP).Policy()}
}
