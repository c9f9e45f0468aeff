package link

import (
	"net/netip"
	"time"

	"github.com/sharelinks/sharelinks/internal/events"
)

// Owner is an application authenticated by one of its API keys.
type Owner struct {
	ID        string
	Name      string
	KeyPrefix string
	Policy    OwnerPolicy // what the operator set for this owner
}

// Link is a stored share link.
type Link struct {
	ID             string
	OwnerID        string
	TokenHash      []byte
	TokenSealed    []byte
	Status         string // stored status; see EffectiveStatus
	LinkType       string
	AuthType       string
	Recipient      string // normalised email or E.164 phone (OTP links)
	PasswordHash   string
	Targets        []Target
	ExpiresAt      time.Time
	MaxAccessCount *int
	AccessCount    int
	Title          string
	Message        string
	LockedUntil    *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	RevokedAt      *time.Time
	LastAccessedAt *time.Time
	// AllowedNetworks limits where recipients may use the link from;
	// empty: anywhere (see Allows).
	AllowedNetworks []netip.Prefix
	Tags            []string // the owner's labels; none is nil
	// NotBefore is when recipients may start to use the link; nil: at once.
	NotBefore *time.Time
	// OTPPolicy is what the owner set of how the link's codes work; nil
	// (and any zero field): the operator's defaults (see Link.OTPLimits).
	OTPPolicy *OTPPolicy
}

// Notification is one "Open" message to one recipient about one link.
type Notification struct {
	ID         string
	OwnerID    string
	LinkID     string
	Channel    string // email | sms
	Recipient  string
	Message    string
	Status     string // queued | sent | failed
	Kind       string // open (the first message) | reminder
	RemindAt   *time.Time
	Attempts   int
	LastError  *string
	ProviderID *string
	SentAt     *time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Query filters and orders an owner's links; After is the decoded cursor.
type Query struct {
	Status    string
	LinkType  string
	TargetID  string
	Recipient string
	Tag       string
	OrderBy   string // created_at | expires_at
	Desc      bool
	Size      int
	After     *Cursor
}

// Cursor is a keyset position: the order column's value and the id.
type Cursor struct {
	OrderBy string    `json:"o"`
	Desc    bool      `json:"d"`
	At      time.Time `json:"t"`
	ID      string    `json:"i"`
}

// Session is a recipient's proof of a successful verification.
type Session struct {
	ID        string
	LinkID    string
	TokenHash []byte
	ExpiresAt time.Time
}

// AccessRequest is one access to count: a verification that opens a
// session, or a direct open of an open link that issues a grant.
type AccessRequest struct {
	Link        Link
	Actor       events.Actor
	Session     *Session           // set for verify
	Opened      *events.OpenedData // set for a direct open
	ChallengeID string             // OTP challenge consumed by this access, if any
}

// AccessResult is the link's count after the access.
type AccessResult struct {
	AccessCount int
	Exhausted   bool
}

// CodeAttempt is a code verify in one statement: the newest challenge of
// the OTP link whose token hashes to TokenHash is charged an attempt and,
// when its stored hash equals CodeHash (secret.Keys.CodeHash of the token
// hash and the code typed), used up, counting an access and opening
// Session. Postgres compares the two hashes only after hashing each with
// Blind, a fresh random value: its byte comparison stops at the first
// difference, and over blinded values where it stops says nothing about
// the stored hash.
type CodeAttempt struct {
	TokenHash []byte
	CodeHash  []byte
	Blind     []byte
	// CodeLength is the digits typed: a challenge whose code has another
	// length is not charged (the full path then says how long it is).
	CodeLength int
	Session    *Session
	Actor      events.Actor
}

// CodeOutcome is what a CodeAttempt did.
type CodeOutcome struct {
	Link      Link      // as it was before the attempt
	Challenge Challenge // the challenge charged: its stored hash and the attempts used, this one included
	Matched   bool      // the code was right and the challenge is used up
	Counted   bool      // the access was counted and the session opened (not when the link was used up meanwhile)
}

// Challenge is one one-time-code request of an OTP link. The code itself
// is never stored: CodeHash is its keyed hash, set by the dispatcher.
type Challenge struct {
	ID         string
	LinkID     string
	Channel    string // email | sms
	Recipient  string
	Status     string // pending | sent | failed | verified | expired | locked
	CodeHash   []byte
	WrongCodes int
	// CodeLength and MaxAttempts are the link's policy when the code was
	// requested: a code keeps the terms it was sent with.
	CodeLength   int
	MaxAttempts  int
	ExpiresAt    time.Time
	FailedBefore bool // the previous send failed: report it instead of sending
}

// OTPLimits throttle code requests and bound guessing.
type OTPLimits struct {
	TTL                time.Duration // how long a code is valid
	MinGap             time.Duration // between two sends for one link
	PerLinkHour        int           // sends per link per hour
	PerDestinationHour int           // sends per address/number per hour, across links
	MaxWrongCodes      int           // wrong codes before a challenge locks
	CodeLength         int           // digits in a code
}

// DefaultOTPLimits follow NIST 800-63B and OWASP (see README).
var DefaultOTPLimits = OTPLimits{TTL: 10 * time.Minute, MinGap: 30 * time.Second, PerLinkHour: 5, PerDestinationHour: 10, MaxWrongCodes: 5, CodeLength: 6}

// AuditQuery filters an owner's audit trail; After is the decoded cursor.
type AuditQuery struct {
	LinkID string
	// OfLink asks for the trail as the link's own resource: not found once
	// the link is gone. Filtering the owner's trail by LinkID is not, so a
	// purged link's history stays readable (the owner filter keeps it
	// tenant-isolated either way).
	OfLink bool
	Type   string
	Since  time.Time
	Size   int
	After  *Cursor
}
