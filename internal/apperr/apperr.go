// Package apperr is the one application error type. Every layer returns
// these (wrapped with %w as it likes); the HTTP edge maps Code to a status in
// exactly one table, so no handler decides a status code on its own.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies an error for the caller.
type Code string

// The codes the service uses. Each maps to one HTTP status at the edge.
const (
	Invalid       Code = "invalid"       // 400: the caller sent something wrong
	Unauthorized  Code = "unauthorized"  // 401: missing or bad credentials
	Forbidden     Code = "forbidden"     // 403: allowed to others, not to this caller (e.g. from this network)
	NotFound      Code = "not_found"     // 404: absent, or not yours
	Conflict      Code = "conflict"      // 409: wrong state for this operation
	Unprocessable Code = "unprocessable" // 422: well-formed, but contradicts an earlier request (a reused Idempotency-Key)
	TooLarge      Code = "too_large"     // 413
	Unsupported   Code = "unsupported"   // 415
	TooMany       Code = "too_many"      // 429 (RetryAfter set)
	Upstream      Code = "upstream"      // 502: a provider failed (e.g. OTP send)
	Unavailable   Code = "unavailable"   // 503: the database cannot take the work now; retry (RetryAfter set)
	Internal      Code = "internal"      // 500: never the caller's fault
)

// Error is an application error: a code for the status table, a stable
// machine-readable reason for clients, a human message and the offending field.
type Error struct {
	Code       Code
	Reason     string // stable snake_case identifier shown to clients, e.g. "link_not_found"
	Message    string
	Field      string
	RetryAfter time.Duration
	Err        error // underlying cause, never shown to clients
}

func (e *Error) Error() string {
	s := string(e.Code) + ": " + e.Message
	if e.Field != "" {
		s += " (" + e.Field + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// New builds an Error. Reason defaults to the code.
func New(code Code, reason, format string, args ...any) *Error {
	if reason == "" {
		reason = string(code)
	}
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Field builds an Invalid error about one input field.
func Field(field, reason, format string, args ...any) *Error {
	e := New(Invalid, reason, format, args...)
	e.Field = field
	return e
}

// As extracts the application error from err, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// CodeOf returns the code of err, Internal when err is not an application error.
func CodeOf(err error) Code {
	if e, ok := As(err); ok {
		return e.Code
	}
	return Internal
}

// LinkNotFound is the single answer for unknown, expired, exhausted and
// revoked links: recipients must not learn which of the four it was.
func LinkNotFound() *Error {
	return New(NotFound, "link_not_found", "link not found or has expired")
}
