// Package httpapi is the HTTP edge: the owner API, the recipient endpoints
// and pages, middleware, and the one table mapping errors to statuses.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/postgres"
)

// MaxBody is the largest request body accepted.
const MaxBody = 1 << 20

var statusOf = map[apperr.Code]int{
	apperr.Invalid:       http.StatusBadRequest,
	apperr.Unauthorized:  http.StatusUnauthorized,
	apperr.Forbidden:     http.StatusForbidden,
	apperr.NotFound:      http.StatusNotFound,
	apperr.Conflict:      http.StatusConflict,
	apperr.Unprocessable: http.StatusUnprocessableEntity,
	apperr.TooLarge:      http.StatusRequestEntityTooLarge,
	apperr.Unsupported:   http.StatusUnsupportedMediaType,
	apperr.TooMany:       http.StatusTooManyRequests,
	apperr.Upstream:      http.StatusBadGateway,
	apperr.Unavailable:   http.StatusServiceUnavailable,
	apperr.Internal:      http.StatusInternalServerError,
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// unavailableRetry is the Retry-After of a 503: long enough for a pool
// to reconnect, short enough that a blip costs a client little.
const unavailableRetry = 2 * time.Second

// AsAppError is err as the edge answers it: the application error it
// carries, or 503 unavailable when the request ran out of time (its
// deadline, RequestTimeout) or Postgres could not take the work now
// (postgres.Unavailable), or nil for an internal error. The JSON API and
// the recipient pages both answer through it.
func AsAppError(err error) *apperr.Error {
	if e, ok := apperr.As(err); ok {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		e := apperr.New(apperr.Unavailable, "unavailable", "the request did not finish in time; retry shortly")
		e.RetryAfter, e.Err = unavailableRetry, err
		return e
	}
	if postgres.Unavailable(err) {
		e := apperr.New(apperr.Unavailable, "unavailable", "the service cannot reach its database right now; retry shortly")
		e.RetryAfter, e.Err = unavailableRetry, err
		return e
	}
	return nil
}

// sampledLog writes a kind of line at most once per interval, with the
// number of events it stands for ("answers": this one and those since the
// last line).
type sampledLog struct {
	every   rate.Sometimes
	answers atomic.Int64
}

func (l *sampledLog) warn(ctx context.Context, log *slog.Logger, msg string, args ...any) {
	l.answers.Add(1)
	l.every.Do(func() {
		log.WarnContext(ctx, msg, append(args, "answers", l.answers.Swap(0))...)
	})
}

// unavailableLines samples the 503 lines: during an outage every request
// fails alike, and a line per request (thousands a second) would bury the
// log and cost more than the answers.
var unavailableLines = sampledLog{every: rate.Sometimes{First: 1, Interval: time.Second}}

// LogUnavailable logs a 503 at most once a second, saying how many 503s
// the line stands for. The JSON API and the recipient pages share it.
func LogUnavailable(ctx context.Context, log *slog.Logger, msg string, args ...any) {
	unavailableLines.warn(ctx, log, msg, args...)
}

// writeError is the single place an error becomes a status code. Internal
// errors are logged with the request id and shown to clients only as a
// generic message; a 503 (the database away, the request out of time)
// is logged as a warning.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := AsAppError(err)
	switch {
	case e == nil:
		log.ErrorContext(r.Context(), "request failed", "err", err, "request_id", requestID(r.Context()),
			"route", r.Pattern)
		e = apperr.New(apperr.Internal, "internal", "internal error; request id %s", requestID(r.Context()))
	case e.Code == apperr.Unavailable:
		LogUnavailable(r.Context(), log, "answered 503", "reason", e.Message, "err", err,
			"request_id", requestID(r.Context()), "route", r.Pattern)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, statusOf[e.Code], errorBody{Error: errorDetail{Code: e.Reason, Message: e.Message, Field: e.Field}})
}

// decode reads a JSON body strictly: the right content type, at most
// MaxBody bytes, no unknown fields, exactly one value.
func decode(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return apperr.New(apperr.Unsupported, "unsupported_media_type", "send the body as application/json")
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		return decodeError(err)
	}
	if err := strictKeys(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return apperr.New(apperr.Invalid, "invalid_json", "the body must hold exactly one JSON value")
	}
	return nil
}

// decodeValue decodes one value of a body decode already checked (a field
// kept raw to tell null from absent) as strictly: no unknown fields.
func decodeValue(raw json.RawMessage, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	return nil
}

func decodeError(err error) error {
	var (
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		tooLarge *http.MaxBytesError
		timeErr  *time.ParseError
	)
	switch {
	case errors.As(err, &tooLarge):
		return apperr.New(apperr.TooLarge, "body_too_large", "the body is larger than %d bytes", MaxBody)
	case errors.As(err, &syntax):
		return apperr.New(apperr.Invalid, "invalid_json", "malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		e := apperr.New(apperr.Invalid, "invalid_json", "%s must be %s, not %s", fieldOr(typ.Field), typ.Type, typ.Value)
		e.Field = typ.Field
		return e
	case errors.As(err, &timeErr):
		return apperr.New(apperr.Invalid, "invalid_time", "times must be RFC 3339, like 2026-12-31T23:59:59Z: %q", timeErr.Value)
	case errors.Is(err, io.EOF):
		return apperr.New(apperr.Invalid, "invalid_json", "the body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.New(apperr.Invalid, "invalid_json", "the body ends in the middle of a JSON value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		e := apperr.New(apperr.Invalid, "unknown_field", "unknown field %q", name)
		e.Field = name
		return e
	}
	return apperr.New(apperr.Invalid, "invalid_json", "cannot decode the body: %s", err.Error())
}

func fieldOr(f string) string {
	if f == "" {
		return "the value"
	}
	return fmt.Sprintf("%q", f)
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// textParams refuses query values Postgres cannot hold as text (invalid
// UTF-8, NUL): a URL may carry any byte, and the answer is a 400 that names
// the parameter, not a 500 from the database.
func textParams(v url.Values) error {
	for k, vals := range v {
		for _, s := range vals {
			if !link.IsText(s) {
				return apperr.Field(k, "invalid_parameter", "%s must be UTF-8 text", k)
			}
		}
	}
	return nil
}

// strictKeys refuses, before anything is decoded, lists longer than
// maxItems and the two things encoding/json accepts silently that
// let another parser read a body differently (reliability.md §6.3): a key
// given twice (the last would win) and a key in other case than ours
// ("Links", or "lin\u212as" with a Kelvin sign, which would match "links").
// Every name in our request bodies is lower-case snake_case, so any other
// key is unknown. jsontext (the JSON v2 token reader) finds duplicate names
// itself; malformed JSON is left to the decoder, which reports it better.
func strictKeys(raw []byte) error {
	dec := strictDecoders.Get().(*jsontext.Decoder)
	defer func() {
		dec.Reset(bytes.NewReader(nil)) // hold no request body in the pool
		strictDecoders.Put(dec)
	}()
	dec.Reset(bytes.NewReader(raw))
	for {
		// Inside an object, an even count of tokens read means a name comes next.
		kind, n := dec.StackIndex(dec.StackDepth())
		tok, err := dec.ReadToken()
		if err != nil {
			var se *jsontext.SyntacticError
			if errors.As(err, &se) && errors.Is(err, jsontext.ErrDuplicateName) {
				key := lastName(se.JSONPointer)
				return apperr.Field(key, "duplicate_field", "field %q is given twice", key)
			}
			return nil
		}
		if kind == '[' && n >= maxItems && tok.Kind() != ']' {
			return apperr.New(apperr.Invalid, "too_many_items", "a list in the body holds more than %d items", maxItems)
		}
		if kind == '{' && n%2 == 0 && tok.Kind() == '"' {
			if key := tok.String(); !snakeCase(key) {
				return apperr.Field(key, "unknown_field", "unknown field %q: names are lower-case, like links or expires_at", key)
			}
		}
	}
}

// maxItems bounds every list in a body, ten times the longest the API
// takes (100 links, targets, ids or recipients): a megabyte of "{}," would
// otherwise become a third of a million structs before any check ran.
const maxItems = 1000

var strictDecoders = sync.Pool{New: func() any { return jsontext.NewDecoder(bytes.NewReader(nil)) }}

func lastName(p jsontext.Pointer) string {
	name := ""
	for tok := range p.Tokens() {
		name = tok
	}
	return name
}

func snakeCase(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
