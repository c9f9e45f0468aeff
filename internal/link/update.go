package link

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
)

// Patch is an owner's change to a link: each field set is changed, the
// rest are kept. MaxAccessCount is set (SetMax) to a count or to nil
// (unlimited); AllowedNetworks set to empty lifts the limit; NotBefore is
// set (SetNotBefore) to a time or to nil (open at once).
type Patch struct {
	ExpiresAt       *time.Time
	SetMax          bool
	MaxAccessCount  *int
	Title           *string
	Message         *string
	AllowedNetworks *[]string
	Tags            *[]string
	SetNotBefore    bool
	NotBefore       *time.Time
	// SetOTPPolicy replaces the link's OTP policy with OTPPolicy (nil:
	// the operator's defaults).
	SetOTPPolicy bool
	OTPPolicy    *OTPPolicySpec
}

// Update changes a link in place: its expiry, access limit, title,
// message, networks, tags, start or OTP policy. The link's status
// follows: a later expiry brings an expired link back, a higher limit an
// exhausted one (under the same URL, as owners ask of share links they let
// lapse), and a limit equal to the accesses already counted exhausts it (a
// lower one is refused). A revoked link is not changed: revoking is the
// owner's promise that the URL is dead, and only Restore, asked for
// explicitly, takes that back.
func (s *Service) Update(ctx context.Context, owner Owner, id string, p Patch) (View, error) {
	now := s.now()
	if p.ExpiresAt == nil && !p.SetMax && p.Title == nil && p.Message == nil && p.AllowedNetworks == nil && p.Tags == nil &&
		!p.SetNotBefore && !p.SetOTPPolicy {
		return View{}, apperr.New(apperr.Invalid, "empty_update",
			"send at least one of expires_at, max_access_count, title, message, allowed_networks, tags, not_before, otp_policy")
	}
	if p.ExpiresAt != nil {
		if err := checkExpiry("expires_at", *p.ExpiresAt, now, s.cfg.Policy.For(owner.Policy)); err != nil {
			return View{}, err
		}
	}
	if p.SetMax {
		if err := s.cfg.Policy.For(owner.Policy).checkMax("max_access_count", p.MaxAccessCount); err != nil {
			return View{}, err
		}
	}
	field := func(name string) string { return name }
	if err := checkTexts(field, deref(p.Title), deref(p.Message)); err != nil {
		return View{}, err
	}
	nets, err := s.patchNetworks(p)
	if err != nil {
		return View{}, err
	}
	var tags []string
	if p.Tags != nil {
		if tags, err = parseTags("tags", *p.Tags); err != nil {
			return View{}, err
		}
	}
	otp, err := p.OTPPolicy.validate("otp_policy")
	if err != nil {
		return View{}, err
	}
	otp = withOwnerOTP(otp, owner.Policy.OTP)
	actor := events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}
	l, err := s.store.UpdateLink(ctx, owner.ID, id, actor, func(l Link) (Link, []string, error) {
		if l.Status == StatusRevoked {
			return l, nil, apperr.New(apperr.Conflict, "link_revoked", "a revoked link cannot be changed; restore it first (POST /v1/links/{id}/restore), or create a new one")
		}
		var changed []string
		if p.ExpiresAt != nil && !p.ExpiresAt.Equal(l.ExpiresAt) {
			l.ExpiresAt = p.ExpiresAt.UTC()
			changed = append(changed, "expires_at")
		}
		if p.SetMax && p.MaxAccessCount != nil && *p.MaxAccessCount < l.AccessCount {
			e := apperr.New(apperr.Conflict, "max_below_access_count",
				"the link was accessed %d times already: max_access_count can be %d (which ends it) or more", l.AccessCount, l.AccessCount)
			e.Field = "max_access_count"
			return l, nil, e
		}
		if p.SetMax && !sameLimit(p.MaxAccessCount, l.MaxAccessCount) {
			l.MaxAccessCount = p.MaxAccessCount
			changed = append(changed, "max_access_count")
		}
		if p.Title != nil && *p.Title != l.Title {
			l.Title = *p.Title
			changed = append(changed, "title")
		}
		if p.Message != nil && *p.Message != l.Message {
			l.Message = *p.Message
			changed = append(changed, "message")
		}
		if p.AllowedNetworks != nil && !slices.Equal(nets, l.AllowedNetworks) {
			l.AllowedNetworks = nets
			changed = append(changed, "allowed_networks")
		}
		if p.Tags != nil && !slices.Equal(tags, l.Tags) {
			l.Tags = tags
			changed = append(changed, "tags")
		}
		if p.SetNotBefore && !sameTime(p.NotBefore, l.NotBefore) {
			l.NotBefore = utcOrNil(p.NotBefore)
			changed = append(changed, "not_before")
		}
		if p.SetOTPPolicy && !IsOTP(l.AuthType) {
			e := apperr.New(apperr.Conflict, "otp_policy_not_applicable", "this link does not use one-time codes")
			e.Field = "otp_policy"
			return l, nil, e
		}
		if p.SetOTPPolicy && !samePolicy(otp, l.OTPPolicy) {
			l.OTPPolicy = otp
			changed = append(changed, "otp_policy")
		}
		// Against the expiry as it will be, whichever of the two changed.
		if err := checkNotBefore("not_before", l.NotBefore, l.ExpiresAt); err != nil && len(changed) > 0 {
			return l, nil, err
		}
		switch {
		case l.MaxAccessCount != nil && l.AccessCount >= *l.MaxAccessCount:
			l.Status = StatusExhausted
		case !l.ExpiresAt.After(now):
			l.Status = StatusExpired
		default:
			l.Status = StatusActive
		}
		return l, changed, nil
	})
	if err != nil {
		return View{}, err
	}
	return s.view(l)
}

func (s *Service) patchNetworks(p Patch) ([]netip.Prefix, error) {
	if p.AllowedNetworks == nil {
		return nil, nil
	}
	return parseNetworks("allowed_networks", *p.AllowedNetworks)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func samePolicy(a, b *OTPPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sameLimit(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// deref is *s, or "" (which every text check passes) for nil.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Restore brings back a link its owner revoked, under the same URL, within
// the RestoreWindow after the revocation: a revoke by tag or by target
// that caught the wrong links, or one made in haste, is undone without
// sending anyone a new link. The link returns to what its count and
// expiry make it (active, exhausted, or expired, which the reaper then
// records); sessions ended by the revocation stay ended, so recipients
// prove themselves again.
func (s *Service) Restore(ctx context.Context, owner Owner, id string) (View, error) {
	views, refused, err := s.RestoreMany(ctx, owner, []string{id})
	if err != nil {
		return View{}, err
	}
	if err := refused[id]; err != nil {
		return View{}, err
	}
	return views[0], nil
}

// RestoreMany restores up to MaxSpecs links at once, in one transaction
// (the ids a revoke by tag, target or recipient answered with, say), and
// says for each id it did not restore why: not the owner's, not revoked,
// past the window.
func (s *Service) RestoreMany(ctx context.Context, owner Owner, ids []string) (views []View, refused map[string]error, err error) {
	if len(ids) == 0 || len(ids) > MaxSpecs {
		return nil, nil, apperr.Field("ids", "invalid_ids", "send 1 to %d link ids", MaxSpecs)
	}
	now := s.now()
	actor := events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}
	restored, refused, err := s.store.RestoreLinks(ctx, owner.ID, ids, actor, func(l Link) (string, error) {
		switch {
		case l.Status != StatusRevoked:
			return "", apperr.New(apperr.Conflict, "not_revoked", "the link is %s, not revoked: there is nothing to restore",
				EffectiveStatus(l.Status, l.ExpiresAt, now))
		case s.cfg.RestoreWindow <= 0:
			return "", apperr.New(apperr.Conflict, "restore_disabled", "revocations are final on this service (RESTORE_WINDOW is 0)")
		case l.RevokedAt == nil || now.Sub(*l.RevokedAt) > s.cfg.RestoreWindow:
			return "", apperr.New(apperr.Conflict, "restore_window_passed",
				"a link can be restored for %s after it is revoked; this one was revoked longer ago", days(s.cfg.RestoreWindow))
		case l.MaxAccessCount != nil && l.AccessCount >= *l.MaxAccessCount:
			return StatusExhausted, nil
		}
		// Past its expiry it is active until the reaper records it
		// expired, with its link.expired, as for every other link.
		return StatusActive, nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, l := range restored {
		v, err := s.view(l)
		if err != nil {
			return nil, nil, err
		}
		views = append(views, v)
	}
	return views, refused, nil
}
