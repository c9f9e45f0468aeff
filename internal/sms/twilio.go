package sms

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// DefaultTwilioTimeout bounds one API call when TwilioConfig.Timeout is zero.
const DefaultTwilioTimeout = 10 * time.Second

// maxErrorBody caps how much of an error response is buffered.
const maxErrorBody = 64 << 10

// twilioCredential is what twilio-go accepts as account SID and auth token
// (it refuses anything else with a misleading 400).
var twilioCredential = regexp.MustCompile(`^[a-zA-Z0-9]+$`)

// TwilioConfig configures NewTwilio.
type TwilioConfig struct {
	// AccountSID ("AC...") and AuthToken authenticate the API calls.
	AccountSID string
	AuthToken  string
	// From is the sending number; MessagingServiceSID ("MG...") a Messaging
	// Service. At least one is required; with both, both are sent and Twilio
	// picks From from the service's sender pool.
	From                string
	MessagingServiceSID string
	// APIURL replaces "https://api.twilio.com" (scheme, host and an optional
	// path prefix) for tests and proxies. Empty means Twilio itself.
	APIURL string
	// Timeout bounds one API call; default DefaultTwilioTimeout.
	Timeout time.Duration
	// Transport is the base HTTP transport; default http.DefaultTransport.
	Transport http.RoundTripper
}

// Twilio sends SMS with twilio-go's Messages API (CreateMessage).
type Twilio struct {
	cfg    TwilioConfig
	creds  *client.Credentials
	apiURL *url.URL // nil: no rewrite
	base   http.RoundTripper
}

// NewTwilio validates cfg and returns a Twilio sender. It makes no request.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	if !twilioCredential.MatchString(cfg.AccountSID) || !twilioCredential.MatchString(cfg.AuthToken) {
		return nil, errors.New("twilio: account SID and auth token must be non-empty and alphanumeric")
	}
	if cfg.From == "" && cfg.MessagingServiceSID == "" {
		return nil, errors.New("twilio: either From or MessagingServiceSID is required")
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTwilioTimeout)
	t := &Twilio{
		cfg:   cfg,
		creds: client.NewCredentials(cfg.AccountSID, cfg.AuthToken),
		base:  cmp.Or[http.RoundTripper](cfg.Transport, http.DefaultTransport),
	}
	if cfg.APIURL != "" {
		u, err := url.Parse(cfg.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("twilio: API URL %q is not an absolute http(s) URL", cfg.APIURL)
		}
		t.apiURL = u
	}
	return t, nil
}

// Send posts one message and returns its SID ("SM..."). A 2xx answer without
// a SID still counts as sent (providerID ""): retrying would send twice.
func (t *Twilio) Send(ctx context.Context, to, body string) (string, error) {
	if err := checkMessage(to, body); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("send sms: %w", err)
	}
	params := &openapi.CreateMessageParams{}
	params.SetTo(to)
	params.SetBody(body)
	if t.cfg.From != "" {
		params.SetFrom(t.cfg.From)
	}
	if t.cfg.MessagingServiceSID != "" {
		params.SetMessagingServiceSid(t.cfg.MessagingServiceSID)
	}

	msg, err := t.api(ctx).CreateMessage(params)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = errors.Join(ctxErr, err)
		}
		return "", redactPhone(fmt.Errorf("send sms via twilio: %w", err), to)
	}
	if msg.Sid == nil {
		return "", nil
	}
	return *msg.Sid, nil
}

// api builds a per-call API service. twilio-go takes no context, so the
// context travels in the HTTP transport instead: cancelling ctx aborts the
// request. Building the service is a few small allocations; the connection
// pool lives in the shared base transport.
func (t *Twilio) api(ctx context.Context) *openapi.ApiService {
	hc := &http.Client{
		Transport: &twilioTransport{ctx: ctx, apiURL: t.apiURL, base: t.base},
		Timeout:   t.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	c := &client.Client{Credentials: t.creds, HTTPClient: hc}
	c.SetAccountSid(t.cfg.AccountSID)
	return openapi.NewApiServiceWithClient(c)
}

// twilioTransport attaches the caller's context to each request, redirects
// requests to apiURL when set, and buffers error responses.
type twilioTransport struct {
	ctx    context.Context
	apiURL *url.URL
	base   http.RoundTripper
}

func (tt *twilioTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(tt.ctx)
	if tt.apiURL != nil {
		r.URL.Scheme = tt.apiURL.Scheme
		r.URL.Host = tt.apiURL.Host
		r.URL.Path = strings.TrimSuffix(tt.apiURL.Path, "/") + r.URL.Path
		r.URL.RawPath = ""
		r.Host = tt.apiURL.Host
	}
	resp, err := tt.base.RoundTrip(r)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	return bufferError(resp)
}

// bufferError reads an error response into memory. twilio-go decodes error
// bodies without closing them, which would pin the connection; and when the
// body is not Twilio's JSON (a proxy's HTML page) it loses the HTTP status,
// so we substitute a Twilio-shaped body carrying it.
func bufferError(resp *http.Response) (*http.Response, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read twilio error response (HTTP %d): %w", resp.StatusCode, err)
	}
	var probe struct {
		Status *int `json:"status"`
	}
	if json.Unmarshal(data, &probe) != nil || probe.Status == nil {
		text := strings.TrimSpace(string(data))
		if len(text) > 200 {
			text = text[:200]
		}
		data, _ = json.Marshal(client.TwilioRestError{
			Status:  resp.StatusCode,
			Message: strings.TrimSpace(http.StatusText(resp.StatusCode) + ": " + text),
		})
		resp.Header.Set("Content-Type", "application/json")
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
	return resp, nil
}

// Twilio satisfies Sender.
var _ Sender = (*Twilio)(nil)
