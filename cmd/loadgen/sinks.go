package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// arrivals records when the first message for each recipient arrived.
// Recipients are unique per request in every scenario, so one time per
// key is enough.
type arrivals struct {
	mu sync.Mutex
	at map[string]time.Time
}

func newArrivals() *arrivals { return &arrivals{at: make(map[string]time.Time)} }

func (a *arrivals) record(key string, t time.Time) {
	key = strings.ToLower(key)
	a.mu.Lock()
	if _, ok := a.at[key]; !ok {
		a.at[key] = t
	}
	a.mu.Unlock()
}

func (a *arrivals) get(key string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[strings.ToLower(key)]
	return t, ok
}

// wait polls until every key arrived or timeout passes; it returns how
// many are missing.
func (a *arrivals) wait(ctx context.Context, keys []string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	next := 0 // keys before next have arrived: arrivals are only added
	for {
		a.mu.Lock()
		for next < len(keys) {
			if _, ok := a.at[strings.ToLower(keys[next])]; !ok {
				break
			}
			next++
		}
		a.mu.Unlock()
		if next == len(keys) || time.Now().After(deadline) || ctx.Err() != nil {
			return len(keys) - next
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// smtpSink is an SMTP server (go-smtp, no TLS, no auth) that accepts
// everything and records when each recipient's message was accepted.
type smtpSink struct {
	addr string
	srv  *smtp.Server
	got  *arrivals
}

func startSMTPSink() (*smtpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &smtpSink{addr: ln.Addr().String(), got: newArrivals()}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true
	s.srv.ReadTimeout = 5 * time.Minute
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.MaxMessageBytes = 10 << 20
	s.srv.MaxRecipients = 100
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *smtpSink) close() { _ = s.srv.Close() }

type sinkSession struct {
	sink *smtpSink
	to   []string
}

func (ss *sinkSession) Reset()        { ss.to = ss.to[:0] }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	ss.to = ss.to[:0]
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

// Data reads the whole message; the arrival is stamped once it is
// accepted, which is when a real relay would take responsibility for it.
func (ss *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	now := time.Now()
	for _, to := range ss.to {
		ss.sink.got.record(to, now)
	}
	return nil
}

// twilioSink speaks the one call of Twilio's Messages API the notifier
// makes: POST /2010-04-01/Accounts/{Sid}/Messages.json, basic auth, form
// To/From/Body; it answers 201 with a Twilio-shaped message.
type twilioSink struct {
	addr  string
	sid   string
	token string
	srv   *http.Server
	got   *arrivals

	mu    sync.Mutex
	codes map[string]string // the last code sent to each number
}

// code is the last code sent to a number.
func (t *twilioSink) code(to string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.codes[to]
	return c, ok
}

func startTwilioSink() (*twilioSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &twilioSink{addr: ln.Addr().String(), sid: "AC" + randHex(16), token: randHex(16), got: newArrivals(), codes: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2010-04-01/Accounts/{sid}/Messages.json", t.create)
	t.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := t.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("twilio sink: %v", err)
		}
	}()
	return t, nil
}

func (t *twilioSink) close() { _ = t.srv.Close() }

func (t *twilioSink) create(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok || user != t.sid || pass != t.token || r.PathValue("sid") != t.sid {
		twilioErr(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if err := r.ParseForm(); err != nil {
		twilioErr(w, http.StatusBadRequest, 20001, "Invalid form body")
		return
	}
	to, from, body := r.PostForm.Get("To"), r.PostForm.Get("From"), r.PostForm.Get("Body")
	if to == "" || body == "" {
		twilioErr(w, http.StatusBadRequest, 21604, "To and Body are required")
		return
	}
	t.got.record(to, time.Now())
	// The notifier's code SMS ends with "#123456" (origin-bound format).
	if i := strings.LastIndexByte(body, '#'); i >= 0 && len(body)-i == 7 {
		t.mu.Lock()
		t.codes[to] = body[i+1:]
		t.mu.Unlock()
	}
	sid := "SM" + randHex(16)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	// Hand-written: the fields twilio-go reads, without reflection cost.
	fmt.Fprintf(w, `{"sid":%q,"account_sid":%q,"to":%q,"from":%q,"status":"queued","num_segments":"1","direction":"outbound-api","api_version":"2010-04-01"}`,
		sid, t.sid, to, from)
}

func twilioErr(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"code":%d,"message":%q,"status":%d}`, code, msg, status)
}
