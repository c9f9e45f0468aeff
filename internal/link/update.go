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
}

// Update changes a link in place: its expiry, access limit, title,
// message or networks. The link's status follows: a later expiry brings
// an expired link back, a higher limit an exhausted one (under the same
// URL, as owners ask of share links they let lapse), and a limit equal to
// the accesses already counted exhausts it (a lower one is refused). A
// revoked link stays revoked: revoking is the owner's promise that the
// URL is dead.
func (s *Service) Update(ctx context.Context, owner Owner, id string, p Patch) (View, error) {
	now := s.now()
	if p.ExpiresAt == nil && !p.SetMax && p.Title == nil && p.Message == nil && p.AllowedNetworks == nil && p.Tags == nil && !p.SetNotBefore {
		return View{}, apperr.New(apperr.Invalid, "empty_update",
			"send at least one of expires_at, max_access_count, title, message, allowed_networks, tags, not_before")
	}
	if p.ExpiresAt != nil {
		if err := checkExpiry("expires_at", *p.ExpiresAt, now, s.cfg.Policy); err != nil {
			return View{}, err
		}
	}
	if err := checkMax("max_access_count", p.MaxAccessCount); err != nil {
		return View{}, err
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
	actor := events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}
	l, err := s.store.UpdateLink(ctx, owner.ID, id, actor, func(l Link) (Link, []string, error) {
		if l.Status == StatusRevoked {
			return l, nil, apperr.New(apperr.Conflict, "link_revoked", "a revoked link cannot be changed; create a new one")
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
