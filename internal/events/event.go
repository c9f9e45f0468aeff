// Package events defines the link events (mirroring schemas/events), the
// transactional outbox relay that publishes them to JetStream, and the
// streams and consumers they travel through.
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event types. The subject of each is SubjectPrefix + type.
const (
	LinkCreated           = "link.created"
	LinkRevoked           = "link.revoked"
	LinkUpdated           = "link.updated"
	LinkExhausted         = "link.exhausted"
	LinkExpired           = "link.expired"
	LinkVerified          = "link.verified"
	LinkVerifyFailed      = "link.verify_failed"
	LinkOpened            = "link.opened"
	LinkPurged            = "link.purged"
	LinkRestored          = "link.restored"
	NotificationRequested = "notification.requested"
	NotificationSent      = "notification.sent"
	NotificationFailed    = "notification.failed"
	OTPRequested          = "otp.requested"
	OTPSent               = "otp.sent"
	OTPFailed             = "otp.failed"
)

// Types lists every event type (schemas/events/v1 has one schema each;
// the schemas tests keep the two in step).
var Types = []string{LinkCreated, LinkRevoked, LinkUpdated, LinkExhausted, LinkExpired, LinkVerified, LinkVerifyFailed,
	LinkOpened, LinkPurged, LinkRestored, NotificationRequested, NotificationSent, NotificationFailed, OTPRequested, OTPSent, OTPFailed}

// Stream and subject names.
const (
	Stream        = "SHARELINKS_EVENTS"
	SubjectPrefix = "sharelinks.events."
	DLQStream     = "SHARELINKS_DLQ"
	DLQPrefix     = "sharelinks.dlq."
)

// Actor says who caused an event. Recipient IP and user agent are recorded
// for the owner's audit trail; no secrets ever go here.
type Actor struct {
	Type      string `json:"type"` // owner | recipient | system
	KeyPrefix string `json:"key_prefix,omitempty"`
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// System is the actor of the service's own work (reaper, workers).
var System = Actor{Type: "system"}

// Event is the envelope every event travels in (schemas/events/v1).
type Event struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Version    int             `json:"version"`
	OccurredAt time.Time       `json:"occurred_at"`
	OwnerID    string          `json:"owner_id"`
	LinkID     string          `json:"link_id"`
	Actor      Actor           `json:"actor"`
	Data       json.RawMessage `json:"data"`
}

// Subject is where the event is published.
func (e Event) Subject() string { return SubjectPrefix + e.Type }

// New builds an event with a time-ordered id (UUIDv7, so outbox order by id
// is creation order).
func New(typ, ownerID, linkID string, actor Actor, data any) (Event, error) {
	if data == nil {
		data = struct{}{}
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("marshal %s data: %w", typ, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("event id: %w", err)
	}
	return Event{
		ID: id.String(), Type: typ, Version: 1, OccurredAt: time.Now().UTC(),
		OwnerID: ownerID, LinkID: linkID, Actor: actor, Data: raw,
	}, nil
}

// Must is New for data that always marshals (plain structs and maps); it
// panics only on a programming error.
func Must(typ, ownerID, linkID string, actor Actor, data any) Event {
	e, err := New(typ, ownerID, linkID, actor, data)
	if err != nil {
		panic(err)
	}
	return e
}

// Parse decodes an envelope.
func Parse(raw []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if e.ID == "" || e.Type == "" || e.Version != 1 {
		return Event{}, fmt.Errorf("event missing id/type or unknown version %d", e.Version)
	}
	return e, nil
}

// Data payloads, one per event type.
type (
	// CreatedData is link.created's data.
	CreatedData struct {
		LinkType       string    `json:"link_type"`
		AuthType       string    `json:"auth_type"`
		ExpiresAt      time.Time `json:"expires_at"`
		MaxAccessCount *int      `json:"max_access_count"`
		TargetCount    int       `json:"target_count"`
		// NotBefore is when the link opens to recipients; absent: at once.
		NotBefore *time.Time `json:"not_before,omitempty"`
	}
	// ExhaustedData is link.exhausted's data.
	ExhaustedData struct {
		AccessCount int `json:"access_count"`
	}
	// VerifiedData is link.verified's data.
	VerifiedData struct {
		AccessCount int    `json:"access_count"`
		SessionID   string `json:"session_id"`
	}
	// VerifyFailedData is link.verify_failed's data.
	VerifyFailedData struct {
		Reason string `json:"reason"`
	}
	// UpdatedData is link.updated's data: the fields the owner changed and
	// the link's status after the change.
	UpdatedData struct {
		Changed []string `json:"changed"`
		Status  string   `json:"status"`
	}
	// RestoredData is link.restored's data: the link's status after its
	// owner brought it back from a revocation.
	RestoredData struct {
		Status string `json:"status"`
	}
	// OpenedData is link.opened's data.
	OpenedData struct {
		TargetID string `json:"target_id"`
		GrantID  string `json:"grant_id"`
	}
	// NotificationData is notification.requested's data.
	NotificationData struct {
		NotificationID string `json:"notification_id"`
		Channel        string `json:"channel"`
	}
	// NotificationSentData is notification.sent's data.
	NotificationSentData struct {
		NotificationID string `json:"notification_id"`
		Channel        string `json:"channel"`
		ProviderID     string `json:"provider_id"`
		Attempts       int    `json:"attempts"`
	}
	// NotificationFailedData is notification.failed's data.
	NotificationFailedData struct {
		NotificationID string `json:"notification_id"`
		Channel        string `json:"channel"`
		Error          string `json:"error"`
		Attempts       int    `json:"attempts"`
	}
	// OTPData is otp.requested's data.
	OTPData struct {
		ChallengeID string `json:"challenge_id"`
		Channel     string `json:"channel"`
	}
	// OTPSentData is otp.sent's data.
	OTPSentData struct {
		ChallengeID string `json:"challenge_id"`
		Channel     string `json:"channel"`
		ProviderID  string `json:"provider_id"`
	}
	// OTPFailedData is otp.failed's data.
	OTPFailedData struct {
		ChallengeID string `json:"challenge_id"`
		Channel     string `json:"channel"`
		Error       string `json:"error"`
	}
)
