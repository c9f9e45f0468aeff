// Package mail sends email: over SMTP with connection reuse (production) or
// into a directory of .eml files (the dev mail sink). Both implement Sender.
//
// Messages are built with github.com/wneessen/go-mail; errors are classified
// by IsTemporary so the caller can decide between retry and give-up in one
// place.
package mail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	netmail "net/mail"
	"regexp"
	"strings"
	"syscall"
	"unicode"

	gomail "github.com/wneessen/go-mail"
)

// Message is one email to one recipient.
type Message struct {
	// To is the recipient address, "bob@example.com" or "Bob <bob@example.com>".
	To string
	// Subject is a single line.
	Subject string
	// Text is the plain-text body; HTML, when set, is its alternative.
	Text string
	// HTML is the optional HTML alternative of Text.
	HTML string
	// MessageID is the Message-ID header, with or without angle brackets, e.g.
	// "<notif-UUID@share.example.com>". The caller derives it from the
	// notification so a retried send carries the same id and receivers can
	// de-duplicate. When empty a random id is generated.
	MessageID string
}

// Sender delivers messages. Implementations are safe for concurrent use.
type Sender interface {
	// Send delivers m and returns an identifier of the delivery at the
	// provider (the server's queue id when it reports one, else the
	// Message-ID). Classify errors with IsTemporary.
	Send(ctx context.Context, m Message) (providerID string, err error)
	// Close releases connections; Send must not be called afterwards.
	Close() error
}

// ErrInvalidMessage is wrapped by errors about a message that can never be
// sent as is (bad address, header injection attempt, empty body). Such errors
// are permanent.
var ErrInvalidMessage = errors.New("invalid message")

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("mail sender closed")

// dialError marks a failure to connect, greet, start TLS or authenticate.
// Such failures are about the server or our configuration, never about the
// message, so they are always temporary: retrying after the outage or the
// configuration fix delivers the message, whereas a permanent verdict would
// fail every queued notification at once.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect to SMTP server: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// IsTemporary reports whether sending again later may succeed.
//
//   - SMTP replies: 4xx → true, 5xx → false (go-mail's *SendError reply code).
//   - Invalid messages (ErrInvalidMessage, bad addresses) → false.
//   - Connection, greeting, TLS and AUTH failures → true (see dialError).
//   - Timeouts, refused/reset connections, EOF, cancelled contexts → true.
//   - Anything unknown → true: a retry is cheaper than a lost notification,
//     and the caller caps attempts anyway.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalidMessage) {
		return false
	}
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	var se *gomail.SendError
	if errors.As(err, &se) {
		code := se.ErrorCode()
		switch {
		case code >= 500 && code < 600:
			return false
		case code >= 400 && code < 500:
			return true
		}
		switch se.Reason {
		case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
			return false
		}
		// ErrConnCheck, ErrWriteContent and friends without a reply code are
		// broken connections.
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return true
}

// buildMsg validates m and turns it into a go-mail message from the given
// sender. Header fields with CR or LF are refused outright: silently cleaning
// them would hide an injection attempt upstream.
//
// It also returns the bare recipient address, for redacting errors.
func buildMsg(from *netmail.Address, m Message) (*gomail.Msg, string, error) {
	if err := checkHeaderValue("To", m.To); err != nil {
		return nil, "", err
	}
	if err := checkHeaderValue("Subject", m.Subject); err != nil {
		return nil, "", err
	}
	if err := checkHeaderValue("Message-ID", m.MessageID); err != nil {
		return nil, "", err
	}
	if strings.TrimSpace(m.To) == "" {
		return nil, "", fmt.Errorf("%w: empty recipient", ErrInvalidMessage)
	}
	to, err := netmail.ParseAddress(m.To)
	if err != nil {
		// net/mail does not echo the address, so the error is safe to log.
		return nil, "", fmt.Errorf("%w: recipient: %w", ErrInvalidMessage, err)
	}
	if m.Text == "" && m.HTML == "" {
		return nil, "", fmt.Errorf("%w: empty body", ErrInvalidMessage)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(m.MessageID), "<"), ">")
	if strings.ContainsAny(id, "<> ") {
		return nil, "", fmt.Errorf("%w: malformed Message-ID %q", ErrInvalidMessage, m.MessageID)
	}

	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(from)
	msg.ToMailAddress(to)
	msg.Subject(m.Subject)
	if id != "" {
		msg.SetMessageIDWithValue(id)
	} else {
		msg.SetMessageID()
	}
	msg.SetDate()
	// RFC 3834: tells auto-responders (out-of-office) not to answer.
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	case m.Text != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	default:
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, to.Address, nil
}

// MaskAddress hides most of an email address for logs: "bob@example.com"
// becomes "b***@example.com". Input without "@" is fully masked.
func MaskAddress(addr string) string {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || local == "" {
		return "***"
	}
	r := []rune(local)
	return string(r[:1]) + "***@" + domain
}

// redactedError replaces the text of an error that may name the recipient
// (go-mail lists "affected recipient(s)", servers echo addresses) while
// keeping the chain for errors.As / errors.Is.
type redactedError struct {
	text string
	err  error
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }

// redactAddress masks every occurrence of addr (any case) in err's text.
// Errors end up in logs and in the notification row; events carry no
// addresses at all.
func redactAddress(err error, addr string) error {
	if addr == "" {
		return err
	}
	re := regexp.MustCompile(`(?i)` + regexp.QuoteMeta(addr))
	return &redactedError{text: re.ReplaceAllLiteralString(err.Error(), MaskAddress(addr)), err: err}
}

// checkHeaderValue refuses control characters (CR and LF above all) in a
// value that becomes a header.
func checkHeaderValue(name, v string) error {
	if strings.ContainsFunc(v, unicode.IsControl) {
		return fmt.Errorf("%w: %s contains control characters (header injection?)", ErrInvalidMessage, name)
	}
	return nil
}

// messageID returns the Message-ID of msg without angle brackets.
func messageID(msg *gomail.Msg) string {
	return strings.TrimSuffix(strings.TrimPrefix(msg.GetMessageID(), "<"), ">")
}

// parseFrom parses a "Name <addr>" sender.
func parseFrom(from string) (*netmail.Address, error) {
	if err := checkHeaderValue("From", from); err != nil {
		return nil, err
	}
	addr, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("%w: from address %q: %w", ErrInvalidMessage, from, err)
	}
	return addr, nil
}
