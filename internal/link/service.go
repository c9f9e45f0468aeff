package link

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/grant"
	"github.com/sharelinks/sharelinks/internal/password"
	"github.com/sharelinks/sharelinks/internal/secret"
)

// Store is what the service needs from persistence.
type Store interface {
	OwnerByKeyHash(ctx context.Context, hash []byte) (Owner, error)
	OpenWithSession(ctx context.Context, tokenHash, sessionHash []byte, targetID, grantID string, actor events.Actor) (Link, error)
	AccessOpen(ctx context.Context, tokenHash []byte, sess *Session, actor events.Actor) (Link, error)
	InsertLinks(ctx context.Context, links []Link, notes []Notification, evs []events.Event, idem *Idempotency) error
	IdempotentResult(ctx context.Context, ownerID, key string, notBefore time.Time) (Idempotency, bool, error)
	GetLink(ctx context.Context, ownerID, id string) (Link, error)
	ListLinks(ctx context.Context, ownerID string, q Query) ([]Link, int, error)
	RevokeLinks(ctx context.Context, owner Owner, ids []string, actor events.Actor) ([]string, error)
	UpdateLink(ctx context.Context, ownerID, id string, actor events.Actor, apply func(Link) (Link, []string, error)) (Link, error)
	RestoreLinks(ctx context.Context, ownerID string, ids []string, actor events.Actor,
		decide func(Link) (string, error)) (restored []Link, refused map[string]error, err error)
	RevokeTarget(ctx context.Context, owner Owner, targetID string, actor events.Actor) ([]string, error)
	RevokeTag(ctx context.Context, owner Owner, tag string, actor events.Actor) ([]string, error)
	RevokeRecipient(ctx context.Context, owner Owner, recipient string, actor events.Actor) ([]string, error)
	OwnedLinks(ctx context.Context, ownerID string, ids []string) ([]Link, error)
	InsertNotifications(ctx context.Context, notes []Notification, evs []events.Event, idem *Idempotency) error
	OwnedNotifications(ctx context.Context, ownerID string, ids []string) ([]Notification, error)
	RecentNotifications(ctx context.Context, ownerID string, since time.Time, limit int) (int, time.Time, error)
	GetNotification(ctx context.Context, ownerID, id string) (Notification, error)
	LinkNotifications(ctx context.Context, ownerID, linkID string) ([]Notification, error)
	LinkByTokenHash(ctx context.Context, hash []byte) (Link, error)
	ChargeVerifyAttempt(ctx context.Context, linkID string, limit int, lockFor time.Duration) error
	FailVerify(ctx context.Context, l Link, reason string, actor events.Actor, limit int, lockFor time.Duration) error
	Access(ctx context.Context, r AccessRequest) (AccessResult, error)
	SessionLink(ctx context.Context, tokenHash, sessionHash []byte) (Link, error)
	RequestOTP(ctx context.Context, l Link, lim OTPLimits, actor events.Actor) (Challenge, error)
	LinkAndChallenge(ctx context.Context, tokenHash []byte) (Link, *Challenge, error)
	ChargeCodeAttempt(ctx context.Context, l Link, challengeID string) (int, error)
	AttemptCode(ctx context.Context, a CodeAttempt) (CodeOutcome, error)
	FailCode(ctx context.Context, l Link, challengeID string, used, limit int, actor events.Actor) error
	ListAudit(ctx context.Context, ownerID string, q AuditQuery) ([]events.Event, error)
	AuditChain(ctx context.Context, ownerID, linkID string,
		start func(head evidence.Head, unsealed int64) error, entry func(evidence.Entry) error) error
}

// Config is the service's behaviour that operators set.
type Config struct {
	PublicBaseURL string
	Policy        Policy
	SessionTTL    time.Duration // how long an access token lasts
	VerifyLimit   int           // wrong passwords before a lockout
	LockFor       time.Duration // lockout length
	OTP           OTPLimits
	// NotifyPerHour is how many notifications one owner may queue in any
	// hour (0: no limit): with a leaked key, one send request alone could
	// queue 100 links × 100 recipients.
	NotifyPerHour int
	// RemindBefore is how long before a link expires a recipient who was
	// sent it and has not opened it gets one reminder (0: never).
	RemindBefore time.Duration
	// RestoreWindow is how long after a revocation the owner may bring the
	// link back under the same URL (0: a revocation is final).
	RestoreWindow time.Duration
}

// Notification kinds: the first message about a link, and the reminder.
const (
	KindOpen     = "open"
	KindReminder = "reminder"
)

// Service is what the HTTP API calls: owners manage links, recipients
// verify and open them.
type Service struct {
	store  Store
	keys   *secret.Keys
	hasher *password.Hasher
	signer *grant.Signer
	cfg    Config
	now    func() time.Time
}

// NewService wires the service.
func NewService(store Store, keys *secret.Keys, hasher *password.Hasher, signer *grant.Signer, cfg Config) *Service {
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 30 * time.Minute
	}
	if cfg.VerifyLimit == 0 {
		cfg.VerifyLimit = 5
	}
	if cfg.LockFor == 0 {
		cfg.LockFor = 15 * time.Minute
	}
	cfg.OTP = cfg.OTP.orDefaults()
	if cfg.Policy.MaxExpiry == 0 {
		cfg.Policy.MaxExpiry = 365 * 24 * time.Hour
	}
	cfg.PublicBaseURL = strings.TrimRight(cfg.PublicBaseURL, "/")
	return &Service{store: store, keys: keys, hasher: hasher, signer: signer, cfg: cfg, now: time.Now}
}

// View is a link as its owner sees it.
type View struct {
	Link
	URL string
	// OTP is the policy that applies to the link's codes (every field
	// set); nil for links without codes.
	OTP *OTPPolicy
}

// Token prefixes make leaked secrets recognisable (and scannable).
const (
	SessionTokenPrefix = "sla_"
	APIKeyPrefix       = "slk_"
)

// Authenticate resolves an API key to its owner.
func (s *Service) Authenticate(ctx context.Context, key string) (Owner, error) {
	if !strings.HasPrefix(key, APIKeyPrefix) || len(key) > 200 {
		return Owner{}, apperr.New(apperr.Unauthorized, "invalid_api_key", "the API key is missing, unknown or revoked")
	}
	return s.store.OwnerByKeyHash(ctx, secret.APIKeyHash(key))
}

func (s *Service) view(l Link) (View, error) {
	tok, err := s.keys.Open(l.TokenSealed, []byte(l.ID))
	if err != nil {
		return View{}, fmt.Errorf("unseal token of %s: %w", l.ID, err)
	}
	l.Status = EffectiveStatus(l.Status, l.ExpiresAt, s.now())
	return View{Link: l, URL: s.cfg.PublicBaseURL + "/s/" + string(tok), OTP: s.OTPPolicy(l)}, nil
}

// Create validates every spec first, then writes all links, notifications
// and events in one transaction. With an Idempotency-Key (idemKey, or ""),
// a retry of a request already made is answered with what it made, as it
// is now (replayed true), and nothing is made twice: not when the first
// answer was lost, and not when the two race. The first request's checks
// are not run again on a replay: its expiry may since have passed the
// window a new request must fit.
func (s *Service) Create(ctx context.Context, owner Owner, specs []Spec, idemKey string) (views []View, replayed bool, err error) {
	idem, err := s.idempotency(owner, idemKey, OpCreateLinks, specs)
	if err != nil {
		return nil, false, err
	}
	return idempotent(ctx, s, idem,
		func() ([]View, error) { return s.create(ctx, owner, specs, idem) },
		func(ids []string) ([]View, error) { return s.replayLinks(ctx, owner, ids) })
}

func (s *Service) create(ctx context.Context, owner Owner, specs []Spec, idem *Idempotency) ([]View, error) {
	if len(specs) == 0 || len(specs) > MaxSpecs {
		return nil, apperr.Field("links", "invalid_links", "send 1 to %d link specs", MaxSpecs)
	}
	now := s.now()
	validated := make([]Validated, len(specs))
	for i, sp := range specs {
		v, err := sp.Validate(fmt.Sprintf("links[%d]", i), now, s.cfg.Policy.For(owner.Policy))
		if err != nil {
			return nil, err
		}
		validated[i] = v
	}
	actor := events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}
	var links []Link
	var notes []Notification
	var evs []events.Event
	for _, v := range validated {
		for _, a := range v.Auths {
			id := uuid.Must(uuid.NewV7()).String()
			tok := secret.NewToken("")
			l := Link{
				ID: id, OwnerID: owner.ID,
				TokenHash: s.keys.LookupHash(tok), TokenSealed: s.keys.Seal([]byte(tok), []byte(id)),
				Status: StatusActive, LinkType: v.Spec.LinkType, AuthType: a.Type, Recipient: a.Recipient,
				Targets: v.Spec.Targets, ExpiresAt: v.Spec.ExpiresAt.UTC(), MaxAccessCount: v.Spec.MaxAccessCount,
				Title: v.Spec.Title, Message: v.Spec.Message, CreatedAt: now, UpdatedAt: now,
				AllowedNetworks: v.Networks, Tags: v.Tags, NotBefore: utcOrNil(v.Spec.NotBefore),
			}
			if IsOTP(a.Type) {
				l.OTPPolicy = withOwnerOTP(v.OTP, owner.Policy.OTP)
			}
			if a.Type == AuthPassword {
				h, err := s.hasher.Hash(ctx, a.Password)
				if err != nil {
					return nil, err
				}
				l.PasswordHash = h
			}
			links = append(links, l)
			evs = append(evs, events.Must(events.LinkCreated, owner.ID, id, actor, events.CreatedData{
				LinkType: l.LinkType, AuthType: l.AuthType, ExpiresAt: l.ExpiresAt,
				MaxAccessCount: l.MaxAccessCount, TargetCount: len(l.Targets), NotBefore: l.NotBefore,
			}))
			if v.Spec.Notify && l.Recipient != "" {
				n := s.newNotification(owner.ID, l, l.Recipient, "")
				notes = append(notes, n)
				evs = append(evs, notificationEvent(n, actor))
			}
		}
	}
	if err := s.notifyQuota(ctx, owner, len(notes)); err != nil {
		return nil, err
	}
	if idem != nil {
		for _, l := range links {
			idem.ResultIDs = append(idem.ResultIDs, l.ID)
		}
	}
	if err := s.store.InsertLinks(ctx, links, notes, evs, idem); err != nil {
		return nil, err
	}
	views := make([]View, len(links))
	for i, l := range links {
		v, err := s.view(l)
		if err != nil {
			return nil, err
		}
		views[i] = v
	}
	return views, nil
}

// newNotification is the first message about a link to one recipient.
// With RemindBefore set, it also says when the reaper should remind the
// recipient if the link is still unopened then; only when that is at
// least RemindBefore away, so a reminder never follows close on the
// message it repeats.
func (s *Service) newNotification(ownerID string, l Link, recipient, message string) Notification {
	ch := "email"
	if strings.HasPrefix(recipient, "+") {
		ch = "sms"
	}
	n := Notification{
		ID: uuid.Must(uuid.NewV7()).String(), OwnerID: ownerID, LinkID: l.ID,
		Channel: ch, Recipient: recipient, Message: message, Status: "queued", Kind: KindOpen,
	}
	if before := s.cfg.RemindBefore; before > 0 {
		if at := l.ExpiresAt.Add(-before); !at.Before(s.now().Add(before)) {
			n.RemindAt = &at
		}
	}
	return n
}

func notificationEvent(n Notification, actor events.Actor) events.Event {
	return events.Must(events.NotificationRequested, n.OwnerID, n.LinkID, actor,
		events.NotificationData{NotificationID: n.ID, Channel: n.Channel})
}

// Get returns one of the owner's links.
func (s *Service) Get(ctx context.Context, owner Owner, id string) (View, error) {
	l, err := s.store.GetLink(ctx, owner.ID, id)
	if err != nil {
		return View{}, err
	}
	return s.view(l)
}

// List returns a page of the owner's links, the total matching, and the
// cursor of the next page (nil on the last).
func (s *Service) List(ctx context.Context, owner Owner, q Query) ([]View, int, *Cursor, error) {
	links, count, err := s.store.ListLinks(ctx, owner.ID, q)
	if err != nil {
		return nil, 0, nil, err
	}
	var next *Cursor
	if len(links) > q.Size {
		links = links[:q.Size]
		last := links[len(links)-1]
		at := last.CreatedAt
		if q.OrderBy == "expires_at" {
			at = last.ExpiresAt
		}
		next = &Cursor{OrderBy: q.OrderBy, Desc: q.Desc, At: at, ID: last.ID}
	}
	views := make([]View, len(links))
	for i, l := range links {
		if views[i], err = s.view(l); err != nil {
			return nil, 0, nil, err
		}
	}
	return views, count, next, nil
}

// RevokeTarget revokes every active link of the owner to targetID, for
// when the file or folder itself goes away or must stop being shared.
func (s *Service) RevokeTarget(ctx context.Context, owner Owner, targetID string) ([]string, error) {
	if targetID == "" || len(targetID) > MaxTargetID || !IsText(targetID) {
		return nil, apperr.Field("target_id", "invalid_target", "target_id is a target id: 1 to %d bytes of text", MaxTargetID)
	}
	return orEmpty(s.store.RevokeTarget(ctx, owner, targetID, events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}))
}

// RevokeTag revokes every active link of the owner tagged tag and returns
// their ids.
func (s *Service) RevokeTag(ctx context.Context, owner Owner, tag string) ([]string, error) {
	if err := checkTag("tag", tag); err != nil {
		return nil, err
	}
	return orEmpty(s.store.RevokeTag(ctx, owner, tag, events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}))
}

// RevokeRecipient revokes every active link of the owner made for one
// recipient (an email address or phone number, as its OTP authenticator
// names them): someone who left, a number that changed hands.
func (s *Service) RevokeRecipient(ctx context.Context, owner Owner, recipient string) ([]string, error) {
	var norm string
	var err error
	if strings.HasPrefix(strings.TrimSpace(recipient), "+") {
		norm, err = NormalizePhone(recipient, s.cfg.Policy.DefaultPhoneZone)
	} else {
		norm, err = NormalizeEmail(recipient)
	}
	if err != nil {
		return nil, apperr.Field("recipient", "invalid_recipient", "%s", err.Error())
	}
	return orEmpty(s.store.RevokeRecipient(ctx, owner, norm, events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}))
}

// orEmpty passes on a list of revoked ids, never nil (it is a JSON list).
func orEmpty(ids []string, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}

// Revoke revokes up to MaxSpecs of the owner's links at once.
func (s *Service) Revoke(ctx context.Context, owner Owner, ids []string) (revoked, notFound []string, err error) {
	if len(ids) == 0 || len(ids) > MaxSpecs {
		return nil, nil, apperr.Field("ids", "invalid_ids", "send 1 to %d link ids", MaxSpecs)
	}
	found, err := s.store.RevokeLinks(ctx, owner, ids, events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix})
	if err != nil {
		return nil, nil, err
	}
	seen := make(map[string]bool, len(found))
	for _, id := range found {
		seen[id] = true
	}
	revoked = []string{}
	notFound = []string{}
	for _, id := range ids {
		if seen[strings.ToLower(id)] {
			revoked = append(revoked, id)
		} else {
			notFound = append(notFound, id)
		}
	}
	return revoked, notFound, nil
}

// Send queues a notification about each link to each recipient (email
// address or E.164 phone number). An Idempotency-Key (idemKey, or "")
// makes a retry answer with the notifications the first request queued,
// as they are now (replayed true), and queue none.
func (s *Service) Send(ctx context.Context, owner Owner, linkIDs, recipients []string, message, idemKey string) (notes []Notification, replayed bool, err error) {
	request := struct {
		LinkIDs    []string `json:"link_ids"`
		Recipients []string `json:"recipients"`
		Message    string   `json:"message"`
	}{linkIDs, recipients, message}
	idem, err := s.idempotency(owner, idemKey, OpSendLinks, request)
	if err != nil {
		return nil, false, err
	}
	return idempotent(ctx, s, idem,
		func() ([]Notification, error) { return s.send(ctx, owner, linkIDs, recipients, message, idem) },
		func(ids []string) ([]Notification, error) { return s.replayNotifications(ctx, owner, ids) })
}

func (s *Service) send(ctx context.Context, owner Owner, linkIDs, recipients []string, message string, idem *Idempotency) ([]Notification, error) {
	if len(linkIDs) == 0 || len(linkIDs) > MaxSpecs {
		return nil, apperr.Field("link_ids", "invalid_link_ids", "send 1 to %d link ids", MaxSpecs)
	}
	if len(recipients) == 0 || len(recipients) > MaxSpecs {
		return nil, apperr.Field("recipients", "invalid_recipients", "send 1 to %d recipients", MaxSpecs)
	}
	if len(message) > MaxMessage || !IsText(message) {
		return nil, apperr.Field("message", "invalid_message", "message at most %d characters of text", MaxMessage)
	}
	norm := make([]string, len(recipients))
	for i, r := range recipients {
		field := fmt.Sprintf("recipients[%d]", i)
		var err error
		if strings.HasPrefix(strings.TrimSpace(r), "+") {
			norm[i], err = NormalizePhone(r, s.cfg.Policy.DefaultPhoneZone)
			if err == nil {
				if err := s.cfg.Policy.SMSAllowed(norm[i]); err != nil {
					return nil, apperr.Field(field, "sms_region_not_allowed", "%s", err.Error())
				}
			}
		} else {
			norm[i], err = NormalizeEmail(r)
		}
		if err != nil {
			return nil, apperr.Field(field, "invalid_recipient", "%s", err.Error())
		}
	}
	for i, id := range linkIDs {
		if _, err := uuid.Parse(id); err != nil {
			return nil, apperr.New(apperr.NotFound, "link_not_found", "link %s not found", linkIDs[i])
		}
	}
	links, err := s.store.OwnedLinks(ctx, owner.ID, linkIDs)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]Link, len(links))
	for _, l := range links {
		byID[l.ID] = l
	}
	now := s.now()
	actor := events.Actor{Type: "owner", KeyPrefix: owner.KeyPrefix}
	var notes []Notification
	var evs []events.Event
	for _, id := range linkIDs {
		l, ok := byID[strings.ToLower(id)]
		if !ok {
			return nil, apperr.New(apperr.NotFound, "link_not_found", "link %s not found", id)
		}
		if EffectiveStatus(l.Status, l.ExpiresAt, now) != StatusActive {
			e := apperr.New(apperr.Conflict, "link_not_active", "link %s is %s; only active links can be sent", id, EffectiveStatus(l.Status, l.ExpiresAt, now))
			e.Field = "link_ids"
			return nil, e
		}
		for _, r := range norm {
			n := s.newNotification(owner.ID, l, r, message)
			notes = append(notes, n)
			evs = append(evs, notificationEvent(n, actor))
		}
	}
	if err := s.notifyQuota(ctx, owner, len(notes)); err != nil {
		return nil, err
	}
	if idem != nil {
		for _, n := range notes {
			idem.ResultIDs = append(idem.ResultIDs, n.ID)
		}
	}
	if err := s.store.InsertNotifications(ctx, notes, evs, idem); err != nil {
		return nil, err
	}
	return notes, nil
}

// notifyQuota refuses, whole, a request that would take the owner past
// NotifyPerHour notifications in the last hour. It counts before the
// insert, outside its transaction: requests of one owner racing each
// other can pass the limit by what they queue at once, which bounds a
// flood without a lock on every notifying request.
func (s *Service) notifyQuota(ctx context.Context, owner Owner, adding int) error {
	limit := s.cfg.NotifyPerHour
	if limit <= 0 || adding == 0 {
		return nil
	}
	if adding > limit {
		return apperr.New(apperr.Invalid, "notification_limit",
			"at most %d notifications an hour, and this request alone queues %d", limit, adding)
	}
	now := s.now()
	n, oldest, err := s.store.RecentNotifications(ctx, owner.ID, now.Add(-time.Hour), limit)
	if err != nil {
		return err
	}
	if n+adding <= limit {
		return nil
	}
	e := apperr.New(apperr.TooMany, "notification_limit",
		"at most %d notifications an hour: %d queued in the last hour, and this request adds %d", limit, n, adding)
	e.RetryAfter = oldest.Add(time.Hour).Sub(now) // when the oldest leaves the window
	return e
}

// Notification returns one of the owner's notifications.
func (s *Service) Notification(ctx context.Context, owner Owner, id string) (Notification, error) {
	return s.store.GetNotification(ctx, owner.ID, id)
}

// LinkNotifications lists the notifications of one of the owner's links.
func (s *Service) LinkNotifications(ctx context.Context, owner Owner, linkID string) ([]Notification, error) {
	if _, err := s.store.GetLink(ctx, owner.ID, linkID); err != nil {
		return nil, err
	}
	return s.store.LinkNotifications(ctx, owner.ID, linkID)
}

// Resolve finds an active link by its token. Unknown, expired, exhausted
// and revoked links all fail with the same LinkNotFound.
func (s *Service) Resolve(ctx context.Context, token string) (Link, error) {
	if token == "" || len(token) > 100 {
		return Link{}, apperr.LinkNotFound()
	}
	l, err := s.store.LinkByTokenHash(ctx, s.keys.LookupHash(token))
	return s.live(ctx, l, err)
}

// resolveWithChallenge is Resolve with the link's newest code challenge.
func (s *Service) resolveWithChallenge(ctx context.Context, token string) (Link, *Challenge, error) {
	if token == "" || len(token) > 100 {
		return Link{}, nil, apperr.LinkNotFound()
	}
	l, ch, err := s.store.LinkAndChallenge(ctx, s.keys.LookupHash(token))
	l, err = s.live(ctx, l, err)
	return l, ch, err
}

// live passes on a found link only while it is active, and only to a
// client inside its networks.
func (s *Service) live(ctx context.Context, l Link, err error) (Link, error) {
	if err != nil {
		return Link{}, err
	}
	if EffectiveStatus(l.Status, l.ExpiresAt, s.now()) != StatusActive {
		return Link{}, apperr.LinkNotFound()
	}
	if err := allowed(ctx, l); err != nil {
		return Link{}, err
	}
	if err := started(l, s.now()); err != nil {
		return Link{}, err
	}
	return l, nil
}

// started passes on a link whose start (NotBefore) has come. Before it,
// the recipient is told when: they hold the token, and the time is what
// they need. Nothing is counted or sent until then.
func started(l Link, now time.Time) error {
	if l.NotBefore == nil || !now.Before(*l.NotBefore) {
		return nil
	}
	e := apperr.New(apperr.Forbidden, "link_not_yet_active", "this link opens at %s", l.NotBefore.UTC().Format(time.RFC3339))
	e.RetryAfter = l.NotBefore.Sub(now)
	return e
}

// Destination is the masked address an OTP goes to.
func (l Link) Destination() string { return MaskRecipient(l.AuthType, l.Recipient) }

// VerifyInput is what a recipient proves.
type VerifyInput struct {
	Password string
	Code     string
}

// Access is a recipient's session: the access token and its lifetime.
type Access struct {
	Token     string
	ExpiresIn time.Duration
	Link      Link
}

// Verify checks the recipient's proof and, on success, counts one access and
// opens a session.
func (s *Service) Verify(ctx context.Context, token string, in VerifyInput, actor events.Actor) (Access, error) {
	if in.Password == "" && in.Code == "" && token != "" && len(token) <= 100 {
		// An open link needs nothing checked but its count: one statement
		// finds it by token and counts. Anything else falls through to
		// the full path below, which also says what is wrong.
		sessTok, sess := s.newSession("")
		l, err := s.store.AccessOpen(ctx, s.keys.LookupHash(token), sess, actor)
		if err == nil {
			return Access{Token: sessTok, ExpiresIn: s.cfg.SessionTTL, Link: l}, nil
		}
		if apperr.CodeOf(err) != apperr.NotFound {
			return Access{}, err
		}
	}
	if code, err := normalizeCode(in.Code); err == nil && in.Password == "" && token != "" && len(token) <= 100 {
		// A code verify whose challenge can take an attempt: one statement
		// charges it, compares the code and, when it is right, counts the
		// access. Anything else falls through to the full path below,
		// which also says what is wrong.
		th := s.keys.LookupHash(token)
		sessTok, sess := s.newSession("")
		out, err := s.store.AttemptCode(ctx, CodeAttempt{TokenHash: th, CodeHash: s.keys.CodeHash(th, code),
			Blind: secret.NewBlind(), CodeLength: len(code), Session: sess, Actor: actor})
		switch {
		case err == nil && out.Counted:
			return Access{Token: sessTok, ExpiresIn: s.cfg.SessionTTL, Link: out.Link}, nil
		case err == nil && out.Matched:
			return Access{}, apperr.LinkNotFound() // used up by the accesses that beat this one
		case err == nil:
			// A wrong code, or one hashed the earlier way: the attempt
			// is charged, so compare as the full path does.
			challengeID, err := s.compareCode(ctx, out.Link, out.Challenge, code, out.Challenge.WrongCodes, actor)
			if err != nil {
				return Access{}, err
			}
			return s.access(ctx, out.Link, challengeID, actor)
		case apperr.CodeOf(err) != apperr.NotFound:
			return Access{}, err
		}
	}
	var l Link
	var ch *Challenge
	var err error
	if in.Code != "" {
		// A code verify needs the link and its newest challenge: one query.
		l, ch, err = s.resolveWithChallenge(ctx, token)
	} else {
		l, err = s.Resolve(ctx, token)
	}
	if err != nil {
		return Access{}, err
	}
	var challengeID string
	switch l.AuthType {
	case AuthNone:
	case AuthPassword:
		if in.Password == "" {
			return Access{}, apperr.Field("password", "password_required", "this link needs a password")
		}
		if len(in.Password) > MaxPassword {
			return Access{}, apperr.Field("password", "invalid_password", "password too long")
		}
		if err := s.store.ChargeVerifyAttempt(ctx, l.ID, s.cfg.VerifyLimit, s.cfg.LockFor); err != nil {
			return Access{}, err
		}
		ok, err := s.hasher.Verify(ctx, l.PasswordHash, in.Password)
		if err != nil {
			return Access{}, fmt.Errorf("verify password: %w", err)
		}
		if !ok {
			if err := s.store.FailVerify(ctx, l, "bad_password", actor, s.cfg.VerifyLimit, s.cfg.LockFor); err != nil {
				return Access{}, err
			}
			return Access{}, apperr.New(apperr.Unauthorized, "invalid_password", "the password is wrong")
		}
	case AuthEmailOTP, AuthSMSOTP:
		if challengeID, err = s.checkCode(ctx, l, ch, in.Code, actor); err != nil {
			return Access{}, err
		}
	}
	return s.access(ctx, l, challengeID, actor)
}

// access counts a verified access (consuming challengeID, when set) and
// opens the recipient's session.
func (s *Service) access(ctx context.Context, l Link, challengeID string, actor events.Actor) (Access, error) {
	sessTok, sess := s.newSession(l.ID)
	if _, err := s.store.Access(ctx, AccessRequest{Link: l, Actor: actor, Session: sess, ChallengeID: challengeID}); err != nil {
		return Access{}, err
	}
	return Access{Token: sessTok, ExpiresIn: s.cfg.SessionTTL, Link: l}, nil
}

// newSession makes a recipient session's token and row.
func (s *Service) newSession(linkID string) (string, *Session) {
	tok := secret.NewToken(SessionTokenPrefix)
	return tok, &Session{
		ID: uuid.Must(uuid.NewV7()).String(), LinkID: linkID,
		TokenHash: s.keys.LookupHash(tok), ExpiresAt: s.now().Add(s.cfg.SessionTTL),
	}
}

// OTPPolicy is the policy that applies to l's codes, every field set;
// nil when l has no codes.
func (s *Service) OTPPolicy(l Link) *OTPPolicy {
	if !IsOTP(l.AuthType) {
		return nil
	}
	p := l.OTPLimits(s.cfg.OTP).Policy()
	return &p
}

// OTPSent is the answer to a code request.
type OTPSent struct {
	SentTo      string
	ResendAfter time.Duration
}

// RequestOTP records a code request for an OTP link; the dispatcher
// generates and sends the code, so the API never sees it.
func (s *Service) RequestOTP(ctx context.Context, token string, actor events.Actor) (OTPSent, error) {
	l, err := s.Resolve(ctx, token)
	if err != nil {
		return OTPSent{}, err
	}
	if l.AuthType != AuthEmailOTP && l.AuthType != AuthSMSOTP {
		return OTPSent{}, apperr.New(apperr.Conflict, "not_otp_link", "this link does not use one-time codes")
	}
	lim := l.OTPLimits(s.cfg.OTP)
	ch, err := s.store.RequestOTP(ctx, l, lim, actor)
	if err != nil {
		return OTPSent{}, err
	}
	if ch.FailedBefore {
		e := apperr.New(apperr.Upstream, "otp_send_failed",
			"we could not deliver the last code to %s; ask again, or ask the sender to check the address", l.Destination())
		e.RetryAfter = lim.MinGap
		return OTPSent{}, e
	}
	return OTPSent{SentTo: l.Destination(), ResendAfter: lim.MinGap}, nil
}

// checkCode verifies a one-time code against the link's newest challenge.
// The attempt is charged before the comparison, which is constant-time on
// keyed hashes.
func (s *Service) checkCode(ctx context.Context, l Link, ch *Challenge, code string, actor events.Actor) (string, error) {
	code, err := normalizeCode(code)
	if err != nil {
		return "", err
	}
	if ch == nil {
		return "", apperr.New(apperr.Unauthorized, "no_code", "request a code first")
	}
	switch {
	case ch.Status == "locked":
		return "", apperr.New(apperr.Unauthorized, "code_locked", "too many wrong codes: request a new code")
	case ch.Status == "expired" || !ch.ExpiresAt.After(s.now()):
		return "", apperr.New(apperr.Unauthorized, "code_expired", "the code has expired: request a new code")
	case ch.Status == "failed":
		return "", apperr.New(apperr.Unauthorized, "no_code", "the code could not be delivered: request a new code")
	case ch.Status == "verified":
		return "", apperr.New(apperr.Unauthorized, "code_used", "the code was already used: request a new code")
	case ch.CodeHash == nil:
		return "", apperr.New(apperr.Unauthorized, "code_not_sent", "the code is still on its way; try again in a moment")
	case len(code) != ch.CodeLength:
		// A code of the wrong length is a slip, not a guess: it is not charged.
		return "", apperr.Field("code", "invalid_code_format", "the code is %d digits", ch.CodeLength)
	}
	used, err := s.store.ChargeCodeAttempt(ctx, l, ch.ID)
	if err != nil {
		return "", err
	}
	return s.compareCode(ctx, l, *ch, code, used, actor)
}

// codeSeparators are what a recipient may type between a code's digits.
// Built once: a Replacer builds its tables on first use, and building one
// per verify showed in the api's CPU profile (BENCHMARKS.md, session 18).
var codeSeparators = strings.NewReplacer(" ", "", "-", "")

// normalizeCode strips the spaces and dashes a recipient may type and
// checks the code's form: digits, as many as a policy may ask for.
func normalizeCode(code string) (string, error) {
	code = codeSeparators.Replace(strings.TrimSpace(code))
	if code == "" {
		return "", apperr.Field("code", "code_required", "enter the code we sent you")
	}
	if len(code) < MinCodeLength || len(code) > MaxCodeLength || strings.Trim(code, "0123456789") != "" {
		return "", apperr.Field("code", "invalid_code_format", "the code is %d to %d digits", MinCodeLength, MaxCodeLength)
	}
	return code, nil
}

// compareCode compares a code with the challenge's, once its attempt was
// charged (used is the attempts counted so far, this one included), and
// records a wrong one. The stored hash is in either form (CodeHash, or
// the earlier OTPHash); a wrong code matches neither.
func (s *Service) compareCode(ctx context.Context, l Link, ch Challenge, code string, used int, actor events.Actor) (string, error) {
	current, earlier := secret.Equal(s.keys.CodeHash(l.TokenHash, code), ch.CodeHash), secret.Equal(s.keys.OTPHash(ch.ID, code), ch.CodeHash)
	if current || earlier {
		return ch.ID, nil
	}
	if err := s.store.FailCode(ctx, l, ch.ID, used, ch.MaxAttempts, actor); err != nil {
		return "", err
	}
	left := ch.MaxAttempts - used
	if left <= 0 {
		return "", apperr.New(apperr.Unauthorized, "code_locked", "too many wrong codes: request a new code")
	}
	if left == 1 {
		return "", apperr.New(apperr.Unauthorized, "invalid_code", "the code is wrong; 1 attempt left")
	}
	return "", apperr.New(apperr.Unauthorized, "invalid_code", "the code is wrong; %d attempts left", left)
}

// SessionLink returns the link an access token opens. A link that stopped
// working answers LinkNotFound; a bad token on a live link, Unauthorized.
func (s *Service) SessionLink(ctx context.Context, token, accessToken string) (Link, error) {
	var l Link
	var err error = apperr.New(apperr.Unauthorized, "access_required", "verify first: the access token is missing, invalid or expired")
	if accessToken != "" && len(accessToken) <= 100 {
		l, err = s.store.SessionLink(ctx, s.keys.LookupHash(token), s.keys.LookupHash(accessToken))
	}
	if apperr.CodeOf(err) == apperr.Unauthorized {
		if _, rerr := s.Resolve(ctx, token); rerr != nil {
			return Link{}, rerr
		}
	}
	if err != nil {
		return Link{}, err
	}
	// A session opened inside the link's networks does not carry outside,
	// and one opened before the owner moved the start later waits for it.
	if err := allowed(ctx, l); err != nil {
		return Link{}, err
	}
	if err := started(l, s.now()); err != nil {
		return Link{}, err
	}
	return l, nil
}

// Opened is a grant for one target.
type Opened struct {
	Grant    grant.Issued
	Target   Target
	Redirect string // target URL with the grant appended, when the target has a URL
}

func pickTarget(l Link, targetID string) (Target, error) {
	if targetID == "" {
		if len(l.Targets) == 1 {
			return l.Targets[0], nil
		}
		return Target{}, apperr.Field("target", "target_required", "this link has %d targets: name one with ?target=ID", len(l.Targets))
	}
	for _, t := range l.Targets {
		if t.ID == targetID {
			return t, nil
		}
	}
	return Target{}, targetNotFound()
}

func targetNotFound() error {
	return apperr.New(apperr.NotFound, "target_not_found", "no such target in this link")
}

func (s *Service) issue(l Link, t Target, grantID string) (Opened, error) {
	g, err := s.signer.Sign(s.now(), grantID, t.ID, l.ID, l.LinkType)
	if err != nil {
		return Opened{}, err
	}
	o := Opened{Grant: g, Target: t}
	if t.URL != "" {
		u, err := url.Parse(t.URL)
		if err != nil {
			return Opened{}, fmt.Errorf("target url: %w", err)
		}
		q := u.Query()
		q.Set("grant", g.Token)
		u.RawQuery = q.Encode()
		o.Redirect = u.String()
	}
	return o, nil
}

// Open issues a grant for one target of the link the session belongs to.
// The session check and the link.opened event are one statement (one
// round trip); the grant is signed after it, in memory, with the id the
// event already carries.
func (s *Service) Open(ctx context.Context, token, accessToken, targetID string, actor events.Actor) (Opened, error) {
	if !IsText(targetID) || len(targetID) > MaxTargetID {
		// No link holds such a target (and Postgres would refuse the
		// text): the link's own state still answers first.
		if _, err := s.Resolve(ctx, token); err != nil {
			return Opened{}, err
		}
		return Opened{}, targetNotFound()
	}
	grantID := uuid.NewString()
	var l Link
	var err error = apperr.New(apperr.Unauthorized, "access_required", "verify first: the access token is missing, invalid or expired")
	if accessToken != "" && len(accessToken) <= 100 && len(token) <= 100 {
		l, err = s.store.OpenWithSession(ctx, s.keys.LookupHash(token), s.keys.LookupHash(accessToken), targetID, grantID, actor)
	}
	if apperr.CodeOf(err) == apperr.Unauthorized {
		// No such session: say 404 rather than 401 when the link itself is gone.
		if _, rerr := s.Resolve(ctx, token); rerr != nil {
			return Opened{}, rerr
		}
	}
	if err != nil {
		return Opened{}, err
	}
	// The statement wrote link.opened exactly when this finds the target.
	t, err := pickTarget(l, targetID)
	if err != nil {
		return Opened{}, err
	}
	return s.issue(l, t, grantID)
}

// OpenDirect opens an open (unauthenticated) link without a session,
// counting one access per call: redirect-style links.
func (s *Service) OpenDirect(ctx context.Context, token, targetID string, actor events.Actor) (Opened, error) {
	l, err := s.Resolve(ctx, token)
	if err != nil {
		return Opened{}, err
	}
	if l.AuthType != AuthNone {
		return Opened{}, apperr.New(apperr.Unauthorized, "access_required", "verify first: the access token is missing, invalid or expired")
	}
	t, err := pickTarget(l, targetID)
	if err != nil {
		return Opened{}, err
	}
	o, err := s.issue(l, t, uuid.NewString())
	if err != nil {
		return Opened{}, err
	}
	if _, err := s.store.Access(ctx, AccessRequest{Link: l, Actor: actor,
		Opened: &events.OpenedData{TargetID: t.ID, GrantID: o.Grant.ID}}); err != nil {
		return Opened{}, err
	}
	return o, nil
}

// AuditChain streams a link's sealed audit chain (see evidence): start
// gets its head and the count of events not sealed yet, entry each sealed
// event in order. It works for purged links too: their trail stays.
func (s *Service) AuditChain(ctx context.Context, owner Owner, linkID string,
	start func(head evidence.Head, unsealed int64) error, entry func(evidence.Entry) error) error {
	return s.store.AuditChain(ctx, owner.ID, linkID, start, entry)
}

// Audit returns a page of the owner's audit trail (newest first) and the
// cursor of the next page. A link filter for a link that is not the
// owner's is NotFound.
func (s *Service) Audit(ctx context.Context, owner Owner, q AuditQuery) ([]events.Event, *Cursor, error) {
	if q.OfLink {
		if _, err := s.store.GetLink(ctx, owner.ID, q.LinkID); err != nil {
			return nil, nil, err
		}
	}
	evs, err := s.store.ListAudit(ctx, owner.ID, q)
	if err != nil {
		return nil, nil, err
	}
	var next *Cursor
	if len(evs) > q.Size {
		evs = evs[:q.Size]
		last := evs[len(evs)-1]
		next = &Cursor{OrderBy: "occurred_at", Desc: true, At: last.OccurredAt, ID: last.ID}
	}
	return evs, next, nil
}
