package testkit

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TwilioServer speaks enough of Twilio's Messages API, on a loopback port, for
// the real twilio-go client: POST /2010-04-01/Accounts/{Sid}/Messages.json
// with basic auth, form fields To, From or MessagingServiceSid, and Body;
// answers 201 with a Twilio-shaped message, or Twilio-shaped errors (bad
// auth, missing fields, invalid number, scripted failures). It can be stopped
// and restarted on the same port. Safe for concurrent use.
type TwilioServer struct {
	tb    testing.TB
	addr  string
	sid   string
	token string

	mu       sync.Mutex
	srv      *http.Server
	ln       net.Listener
	served   chan struct{}
	msgs     []TwilioMessage
	changed  chan struct{} // closed and replaced whenever msgs grows
	fail     twilioFailure
	attempts int
}

// TwilioMessage is one message accepted by a TwilioServer.
type TwilioMessage struct {
	// SID is the message SID returned ("SM" + 32 hex digits).
	SID                 string
	AccountSID          string
	To                  string
	From                string
	MessagingServiceSID string
	Body                string
	// Form is the full form as posted.
	Form     url.Values
	Received time.Time
}

// twilioFailure is a scripted failure for the next n requests.
type twilioFailure struct {
	n      int
	status int
	code   int
	msg    string
}

// twilioE164 is what the fake accepts as a "To" number.
var twilioE164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// StartTwilio starts a fake Twilio API on 127.0.0.1 with a random account
// SID and auth token, and stops it at test cleanup.
func StartTwilio(tb testing.TB) *TwilioServer {
	tb.Helper()
	s := &TwilioServer{
		tb:      tb,
		sid:     "AC" + twilioHex(16),
		token:   twilioHex(16),
		changed: make(chan struct{}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testkit: listen for Twilio: %v", err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	tb.Cleanup(s.Stop)
	return s
}

// URL is the base URL to use as TWILIO_API_URL ("http://127.0.0.1:port").
func (s *TwilioServer) URL() string { return "http://" + s.addr }

// SID is the account SID the server accepts.
func (s *TwilioServer) SID() string { return s.sid }

// Token is the auth token the server accepts.
func (s *TwilioServer) Token() string { return s.token }

// FailNext makes the next n Messages requests (after authentication) answer
// httpStatus with a Twilio error body carrying twilioCode and msg, e.g.
// (1, 400, 21211, "invalid number") or (2, 429, 20429, "Too Many Requests").
func (s *TwilioServer) FailNext(n, httpStatus, twilioCode int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = twilioFailure{n: n, status: httpStatus, code: twilioCode, msg: msg}
}

// Messages returns a copy of the accepted messages, in order.
func (s *TwilioServer) Messages() []TwilioMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TwilioMessage(nil), s.msgs...)
}

// Attempts is the number of authenticated Messages requests received,
// including failed ones.
func (s *TwilioServer) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// WaitMessages waits until at least n messages were accepted and returns
// them; it fails tb after timeout.
func (s *TwilioServer) WaitMessages(tb testing.TB, n int, timeout time.Duration) []TwilioMessage {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, changed := len(s.msgs), s.changed
		if got >= n {
			msgs := append([]TwilioMessage(nil), s.msgs...)
			s.mu.Unlock()
			return msgs
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("testkit: Twilio server got %d messages within %v, want %d", got, timeout, n)
			return nil
		}
	}
}

// Stop closes the listener and all connections. Idempotent.
func (s *TwilioServer) Stop() {
	s.mu.Lock()
	srv, ln, served := s.srv, s.ln, s.served
	s.srv, s.ln = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	_ = ln.Close()
	<-served
}

// Restart serves again on the same port after Stop; messages are kept.
func (s *TwilioServer) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if running {
		s.tb.Fatalf("testkit: Twilio Restart while running")
	}
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("testkit: Twilio restart on %s: %v", s.addr, err)
	}
	s.serve(ln)
}

func (s *TwilioServer) serve(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2010-04-01/Accounts/{sid}/Messages.json", s.handleCreate)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	s.mu.Lock()
	s.srv, s.ln, s.served = srv, ln, served
	s.mu.Unlock()
	go func() {
		defer close(served)
		// Serve ends with ErrServerClosed or a closed-listener error on
		// Stop; neither is worth reporting.
		_ = srv.Serve(ln)
	}()
}

func (s *TwilioServer) handleCreate(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.sid || pass != s.token {
		twilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if r.PathValue("sid") != s.sid {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if err := r.ParseForm(); err != nil {
		twilioError(w, http.StatusBadRequest, 20001, "Invalid form body")
		return
	}
	f := r.PostForm

	s.mu.Lock()
	s.attempts++
	if s.fail.n > 0 {
		s.fail.n--
		fail := s.fail
		s.mu.Unlock()
		if fail.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		twilioError(w, fail.status, fail.code, fail.msg)
		return
	}
	s.mu.Unlock()

	to, from, svc, body := f.Get("To"), f.Get("From"), f.Get("MessagingServiceSid"), f.Get("Body")
	switch {
	case to == "":
		twilioError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case from == "" && svc == "":
		twilioError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
		return
	case body == "":
		twilioError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case !twilioE164.MatchString(to):
		twilioError(w, http.StatusBadRequest, 21211, "The 'To' number "+to+" is not a valid phone number.")
		return
	}

	now := time.Now().UTC()
	m := TwilioMessage{
		SID: "SM" + twilioHex(16), AccountSID: s.sid, To: to, From: from,
		MessagingServiceSID: svc, Body: body, Form: f, Received: now,
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	date := now.Format(time.RFC1123Z)
	uri := "/2010-04-01/Accounts/" + s.sid + "/Messages/" + m.SID
	resp := map[string]any{
		"account_sid":           s.sid,
		"api_version":           "2010-04-01",
		"body":                  body,
		"date_created":          date,
		"date_sent":             nil,
		"date_updated":          date,
		"direction":             "outbound-api",
		"error_code":            nil,
		"error_message":         nil,
		"from":                  from,
		"messaging_service_sid": twilioNullable(svc),
		"num_media":             "0",
		"num_segments":          "1",
		"price":                 nil,
		"price_unit":            "USD",
		"sid":                   m.SID,
		"status":                "queued",
		"subresource_uris":      map[string]string{"media": uri + "/Media.json"},
		"to":                    to,
		"uri":                   uri + ".json",
	}
	if from == "" {
		resp["from"] = nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(resp)
}

// twilioError writes Twilio's error document.
func twilioError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code":      code,
		"message":   msg,
		"more_info": "https://www.twilio.com/docs/errors/" + strconv.Itoa(code),
		"status":    status,
	})
}

// twilioNullable maps "" to JSON null, as Twilio does for unset fields.
func twilioNullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// twilioHex returns n random bytes as lowercase hex.
func twilioHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
