package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/secret"
)

// IdempotencyTTL is how long an Idempotency-Key is remembered: a retry
// within it is answered with what the first request made; after it, the
// key is free and names a new request. A day covers a client's retries
// across an outage of its own, as the keys of the hosted payment APIs do.
const IdempotencyTTL = 24 * time.Hour

// MaxIdempotencyKey is the longest key accepted, in bytes: room for a
// UUID, a hash or a client's own composite key.
const MaxIdempotencyKey = 255

// The operations an Idempotency-Key can name. A key names one request of
// one operation: the same key on the other operation is a reuse.
const (
	OpCreateLinks = "create_links"
	OpSendLinks   = "send_links"
)

// ErrKeyTaken is the store's answer when another request recorded the same
// Idempotency-Key first (it may have committed a moment ago).
var ErrKeyTaken = errors.New("idempotency key taken")

// Idempotency is the record of an idempotent request: what it was (its
// operation and a keyed fingerprint of its body) and the ids of what it
// made, written in the transaction that makes them.
type Idempotency struct {
	OwnerID     string
	Key         string
	Operation   string
	Fingerprint []byte
	ResultIDs   []string
}

// checkIdempotencyKey accepts 1 to MaxIdempotencyKey visible ASCII
// characters (a UUID, as the IETF draft suggests, or anything like it).
func checkIdempotencyKey(key string) error {
	bad := apperr.Field("Idempotency-Key", "invalid_idempotency_key",
		"Idempotency-Key must be 1 to %d visible ASCII characters, e.g. a UUID", MaxIdempotencyKey)
	if key == "" || len(key) > MaxIdempotencyKey {
		return bad
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return bad
		}
	}
	return nil
}

// idempotency prepares the record of a request with key (nil without
// one): its fingerprint covers the operation and the decoded request, so
// the same request sent with other spacing or key order still matches.
func (s *Service) idempotency(owner Owner, key, op string, request any) (*Idempotency, error) {
	if key == "" {
		return nil, nil
	}
	if err := checkIdempotencyKey(key); err != nil {
		return nil, err
	}
	body, err := json.Marshal(request)
	if err != nil {
		return nil, fmt.Errorf("fingerprint request: %w", err)
	}
	return &Idempotency{
		OwnerID: owner.ID, Key: key, Operation: op,
		Fingerprint: s.keys.Fingerprint([]byte(op), body),
	}, nil
}

// idempotent runs do, the request idem names (do alone when idem is nil),
// unless an earlier request with its key made something already: then
// that is rendered by replay from its ids instead, and replayed is true.
// A request that loses the race for its key to a concurrent one (the
// key's index waited for that one's commit) is answered the same way.
func idempotent[T any](ctx context.Context, s *Service, idem *Idempotency,
	do func() ([]T, error), replay func(ids []string) ([]T, error)) (out []T, replayed bool, err error) {
	ids, ok, err := s.prior(ctx, idem)
	if err == nil && !ok {
		out, err = do()
		if !errors.Is(err, ErrKeyTaken) {
			return out, false, err
		}
		if ids, ok, err = s.prior(ctx, idem); err == nil && !ok {
			// Only a record that expired between the two reads gets here.
			err = apperr.New(apperr.Conflict, "idempotency_key_busy", "another request with this Idempotency-Key was in flight; retry")
		}
	}
	if err != nil {
		return nil, false, err
	}
	out, err = replay(ids)
	return out, err == nil, err
}

// prior returns the ids an earlier request with idem's key made, if there
// is one within IdempotencyTTL. A key used for a different request is a
// 422: answering it with the first request's result would tell the client
// its second request happened.
func (s *Service) prior(ctx context.Context, idem *Idempotency) ([]string, bool, error) {
	if idem == nil {
		return nil, false, nil
	}
	rec, ok, err := s.store.IdempotentResult(ctx, idem.OwnerID, idem.Key, s.now().Add(-IdempotencyTTL))
	if err != nil || !ok {
		return nil, false, err
	}
	if rec.Operation != idem.Operation || !secret.Equal(rec.Fingerprint, idem.Fingerprint) {
		e := apperr.New(apperr.Unprocessable, "idempotency_key_reused",
			"this Idempotency-Key was used in the last %s for a different request; send a new key with a new request", IdempotencyTTL)
		e.Field = "Idempotency-Key"
		return nil, false, e
	}
	return rec.ResultIDs, true, nil
}

// inOrder returns the items whose ids are in ids, in that order; an id
// without an item (a link purged since) is left out.
func inOrder[T any](ids []string, items []T, id func(T) string) []T {
	byID := make(map[string]T, len(items))
	for _, it := range items {
		byID[id(it)] = it
	}
	out := make([]T, 0, len(ids))
	for _, i := range ids {
		if it, ok := byID[i]; ok {
			out = append(out, it)
		}
	}
	return out
}

// replayLinks renders the links an earlier create made, in its order and
// as they are now (a link revoked since shows as revoked).
func (s *Service) replayLinks(ctx context.Context, owner Owner, ids []string) ([]View, error) {
	links, err := s.store.OwnedLinks(ctx, owner.ID, ids)
	if err != nil {
		return nil, err
	}
	links = inOrder(ids, links, func(l Link) string { return l.ID })
	views := make([]View, len(links))
	for i, l := range links {
		if views[i], err = s.view(l); err != nil {
			return nil, err
		}
	}
	return views, nil
}

// replayNotifications returns the notifications an earlier send queued,
// in its order and as they are now.
func (s *Service) replayNotifications(ctx context.Context, owner Owner, ids []string) ([]Notification, error) {
	notes, err := s.store.OwnedNotifications(ctx, owner.ID, ids)
	if err != nil {
		return nil, err
	}
	return inOrder(ids, notes, func(n Notification) string { return n.ID }), nil
}
