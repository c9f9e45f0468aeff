// Package sms sends text messages: through Twilio's Messages API
// (production) or into a directory of files (the dev SMS sink). Both
// implement Sender; IsTemporary classifies errors for retry decisions.
package sms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/twilio/twilio-go/client"
)

// Sender delivers SMS. Implementations are safe for concurrent use.
type Sender interface {
	// Send delivers body to the phone number to (E.164, e.g. "+447700900123")
	// and returns the provider's message id. Classify errors with IsTemporary.
	Send(ctx context.Context, to, body string) (providerID string, err error)
}

// ErrInvalid is wrapped by errors about a message that can never be sent as
// is (empty or malformed number, empty or oversized body). Permanent.
var ErrInvalid = errors.New("invalid sms")

// MaxBodyRunes is Twilio's limit on a message body.
const MaxBodyRunes = 1600

// IsTemporary reports whether sending again later may succeed.
//
//   - Twilio API errors: HTTP 429 and 5xx → true; other 4xx (21211 invalid
//     number, 21610 unsubscribed recipient, 20003 bad credentials, ...) → false.
//   - ErrInvalid → false.
//   - Timeouts, refused/reset connections, EOF, cancelled contexts → true.
//   - Anything unknown → true: the caller caps attempts.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalid) {
		return false
	}
	var rest *client.TwilioRestError
	if errors.As(err, &rest) {
		return temporaryStatus(rest.Status)
	}
	var restV1 *client.RestErrorV1
	if errors.As(err, &restV1) {
		return temporaryStatus(restV1.HttpStatusCode)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return true
}

// temporaryStatus classifies an HTTP status from the API. 401 and 403 are
// the account's credentials or permissions, not the message: every send
// fails until an operator fixes them, so they retry with backoff (as SMTP
// AUTH failures do) instead of failing each code for good.
func temporaryStatus(status int) bool {
	switch {
	case status == 429 || status >= 500 || status == 401 || status == 403:
		return true
	case status >= 400:
		return false
	}
	return true // no status: the error did not come from the API
}

// MaskPhone hides most of a phone number for logs: "+447700900123" becomes
// "+44********23". Very short input is fully masked.
func MaskPhone(phone string) string {
	r := []rune(phone)
	if len(r) < 7 {
		return "***"
	}
	return string(r[:3]) + strings.Repeat("*", len(r)-5) + string(r[len(r)-2:])
}

// checkMessage validates what every Sender needs.
func checkMessage(to, body string) error {
	if to == "" || strings.ContainsFunc(to, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("%w: recipient number is empty or contains spaces", ErrInvalid)
	}
	if strings.TrimSpace(body) == "" {
		return fmt.Errorf("%w: empty body", ErrInvalid)
	}
	if n := utf8.RuneCountInString(body); n > MaxBodyRunes {
		return fmt.Errorf("%w: body has %d characters, limit %d", ErrInvalid, n, MaxBodyRunes)
	}
	return nil
}

// redactedError replaces the text of an error that may contain the phone
// number (Twilio echoes it: "The 'To' number +1... is not valid") while
// keeping the chain for errors.As.
type redactedError struct {
	text string
	err  error
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }

// redactPhone masks every occurrence of phone in err's text, with or without
// its leading "+".
func redactPhone(err error, phone string) error {
	text := err.Error()
	for _, p := range []string{phone, strings.TrimPrefix(phone, "+")} {
		if len(p) >= 4 {
			text = strings.ReplaceAll(text, p, MaskPhone(phone))
		}
	}
	return &redactedError{text: text, err: err}
}
