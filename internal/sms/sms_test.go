package sms_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"

	"github.com/sharelinks/sharelinks/internal/sms"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

const testTo = "+447700900123"

func newTwilio(t *testing.T, srv *testkit.TwilioServer, mutate ...func(*sms.TwilioConfig)) *sms.Twilio {
	t.Helper()
	cfg := sms.TwilioConfig{
		AccountSID: srv.SID(),
		AuthToken:  srv.Token(),
		From:       "+15005550006",
		APIURL:     srv.URL(),
		Timeout:    5 * time.Second,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	tw, err := sms.NewTwilio(cfg)
	if err != nil {
		t.Fatalf("NewTwilio: %v", err)
	}
	return tw
}

var smsSID = regexp.MustCompile(`^SM[0-9a-f]{32}$`)

func TestTwilioSend(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	tw := newTwilio(t, srv)

	body := "Your sharelinks code is 123456.\n\n@share.example.com #123456"
	id, err := tw.Send(context.Background(), testTo, body)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !smsSID.MatchString(id) {
		t.Errorf("provider id = %q, want a message SID", id)
	}
	msgs := srv.WaitMessages(t, 1, 5*time.Second)
	m := msgs[0]
	if m.SID != id || m.To != testTo || m.From != "+15005550006" || m.Body != body || m.AccountSID != srv.SID() {
		t.Errorf("server got %+v", m)
	}
	if m.MessagingServiceSID != "" {
		t.Errorf("MessagingServiceSid sent without being configured: %q", m.MessagingServiceSID)
	}
}

func TestTwilioMessagingService(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	tw := newTwilio(t, srv, func(c *sms.TwilioConfig) {
		c.From = ""
		c.MessagingServiceSID = "MG0123456789abcdef0123456789abcdef"
	})
	if _, err := tw.Send(context.Background(), testTo, "hello"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := srv.WaitMessages(t, 1, 5*time.Second)[0]
	if m.MessagingServiceSID != "MG0123456789abcdef0123456789abcdef" || m.From != "" {
		t.Errorf("server got From %q, MessagingServiceSid %q", m.From, m.MessagingServiceSID)
	}
}

func TestTwilioErrorsClassified(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	tw := newTwilio(t, srv)
	cases := []struct {
		name       string
		status     int
		code       int
		temporary  bool
		twilioCode int
	}{
		{"429", http.StatusTooManyRequests, 20429, true, 20429},
		{"500", http.StatusInternalServerError, 20500, true, 20500},
		{"503", http.StatusServiceUnavailable, 20503, true, 20503},
		{"400 invalid number", http.StatusBadRequest, 21211, false, 21211},
		{"400 unsubscribed", http.StatusBadRequest, 21610, false, 21610},
	}
	for _, c := range cases {
		srv.FailNext(1, c.status, c.code, "scripted failure for "+testTo)
		_, err := tw.Send(context.Background(), testTo, "hello")
		if err == nil {
			t.Fatalf("%s: Send succeeded", c.name)
		}
		if got := sms.IsTemporary(err); got != c.temporary {
			t.Errorf("%s: IsTemporary = %v, want %v (err %v)", c.name, got, c.temporary, err)
		}
		var rest *client.TwilioRestError
		if !errors.As(err, &rest) || rest.Code != c.twilioCode || rest.Status != c.status {
			t.Errorf("%s: err = %v, want TwilioRestError %d/%d", c.name, err, c.status, c.twilioCode)
		}
		if strings.Contains(err.Error(), testTo) {
			t.Errorf("%s: error shows the full number: %v", c.name, err)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("messages = %d, want 0", n)
	}
	// After the scripted failures the same sender works again.
	if _, err := tw.Send(context.Background(), testTo, "hello"); err != nil {
		t.Fatalf("Send after failures: %v", err)
	}
}

func TestTwilioRealValidation(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	tw := newTwilio(t, srv)
	// The fake validates like Twilio: a malformed number is 400/21211.
	_, err := tw.Send(context.Background(), "+0123", "hello")
	var rest *client.TwilioRestError
	if !errors.As(err, &rest) || rest.Code != 21211 || sms.IsTemporary(err) {
		t.Errorf("invalid number: err = %v, want permanent 21211", err)
	}

	bad := newTwilio(t, srv, func(c *sms.TwilioConfig) { c.AuthToken = "wrongtoken" })
	_, err = bad.Send(context.Background(), testTo, "hello")
	if !errors.As(err, &rest) || rest.Status != http.StatusUnauthorized || rest.Code != 20003 || !sms.IsTemporary(err) {
		t.Errorf("bad token: err = %v, want 401/20003, retried", err)
	}
	if strings.Contains(fmt.Sprint(err), "wrongtoken") {
		t.Errorf("error leaks the token: %v", err)
	}
}

func TestTwilioServerDownThenUp(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	tw := newTwilio(t, srv)
	ctx := context.Background()
	if _, err := tw.Send(ctx, testTo, "one"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// The first attempt may hit the kept-alive connection the server just
	// closed (EOF); the next finds nobody listening. Both are temporary.
	_, err := tw.Send(ctx, testTo, "two")
	if err == nil || !sms.IsTemporary(err) {
		t.Errorf("server down: err = %v, want temporary", err)
	}
	_, err = tw.Send(ctx, testTo, "two again")
	if err == nil || !sms.IsTemporary(err) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("server down: err = %v, want temporary connection refused", err)
	}
	srv.Restart()
	if _, err := tw.Send(ctx, testTo, "three"); err != nil {
		t.Fatalf("Send after restart: %v", err)
	}
	if msgs := srv.WaitMessages(t, 2, 5*time.Second); msgs[1].Body != "three" {
		t.Errorf("second message body = %q", msgs[1].Body)
	}
}

// hangingServer accepts requests and never answers until the test ends.
func hangingServer(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}), ReadHeaderTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		close(release)
		_ = srv.Close()
	})
	return "http://" + ln.Addr().String()
}

func TestTwilioHonoursContextAndTimeout(t *testing.T) {
	t.Parallel()
	url := hangingServer(t)
	tw, err := sms.NewTwilio(sms.TwilioConfig{AccountSID: "AC1", AuthToken: "tok", From: "+15005550006", APIURL: url, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = tw.Send(ctx, testTo, "hello")
	if !errors.Is(err, context.DeadlineExceeded) || !sms.IsTemporary(err) {
		t.Errorf("ctx deadline: err = %v, want temporary DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Send took %v despite a 100ms context", d)
	}

	short, err := sms.NewTwilio(sms.TwilioConfig{AccountSID: "AC1", AuthToken: "tok", From: "+15005550006", APIURL: url, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = short.Send(context.Background(), testTo, "hello")
	if err == nil || !sms.IsTemporary(err) {
		t.Errorf("client timeout: err = %v, want temporary", err)
	}

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := tw.Send(cancelled, testTo, "hello"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v", err)
	}
}

func TestTwilioNonJSONErrorKeepsStatus(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		status    int
		temporary bool
	}{{http.StatusBadGateway, true}, {http.StatusNotFound, false}} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(c.status)
			_, _ = io.WriteString(w, "<html>proxy says no</html>")
		}), ReadHeaderTimeout: time.Second}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		tw, err := sms.NewTwilio(sms.TwilioConfig{AccountSID: "AC1", AuthToken: "tok", From: "+1500", APIURL: "http://" + ln.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tw.Send(context.Background(), testTo, "hello")
		var rest *client.TwilioRestError
		if !errors.As(err, &rest) || rest.Status != c.status {
			t.Errorf("HTTP %d: err = %v, want TwilioRestError with that status", c.status, err)
		}
		if sms.IsTemporary(err) != c.temporary {
			t.Errorf("HTTP %d: IsTemporary = %v", c.status, !c.temporary)
		}
	}
}

func TestTwilioConcurrentSends(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	tw := newTwilio(t, srv)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if _, err := tw.Send(context.Background(), testTo, fmt.Sprintf("msg %d", i)); err != nil {
				t.Errorf("Send %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	srv.WaitMessages(t, 10, 5*time.Second)
}

func TestNewTwilioValidates(t *testing.T) {
	t.Parallel()
	cases := map[string]sms.TwilioConfig{
		"no sid":    {AuthToken: "t", From: "+1"},
		"bad token": {AccountSID: "AC1", AuthToken: "t-t", From: "+1"},
		"no sender": {AccountSID: "AC1", AuthToken: "t"},
		"bad url":   {AccountSID: "AC1", AuthToken: "t", From: "+1", APIURL: "ftp://x"},
	}
	for name, cfg := range cases {
		if _, err := sms.NewTwilio(cfg); err == nil {
			t.Errorf("%s: NewTwilio succeeded", name)
		}
	}
}

func TestInvalidInputIsPermanent(t *testing.T) {
	t.Parallel()
	srv := testkit.StartTwilio(t)
	senders := map[string]sms.Sender{
		"twilio": newTwilio(t, srv),
		"sink":   sms.NewLogSink(t.TempDir(), nil),
	}
	for name, s := range senders {
		for _, c := range [][2]string{{"", "body"}, {"+44 7700", "body"}, {testTo, "  "}, {testTo, strings.Repeat("x", 1601)}} {
			_, err := s.Send(context.Background(), c[0], c[1])
			if !errors.Is(err, sms.ErrInvalid) || sms.IsTemporary(err) {
				t.Errorf("%s: Send(%q, %d chars) err = %v, want permanent ErrInvalid", name, c[0], len(c[1]), err)
			}
		}
	}
	if n := srv.Attempts(); n != 0 {
		t.Errorf("invalid input reached Twilio %d times", n)
	}
}

func TestLogSink(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "sms")
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	sink := sms.NewLogSink(dir, logger)

	body := "Your sharelinks code is 987654.\n\n@share.example.com #987654"
	id, err := sink.Send(context.Background(), testTo, body)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) != 1 {
		t.Fatalf("files = %v (%v), want 1", files, err)
	}
	info, err := os.Stat(files[0])
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("file mode = %v (%v), want 0600", info.Mode().Perm(), err)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var m sms.SinkMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.To != testTo || m.Body != body || time.Since(m.Time) > time.Minute {
		t.Errorf("file holds %+v", m)
	}
	mu.Lock()
	line := logs.String()
	mu.Unlock()
	if !strings.Contains(line, sms.MaskPhone(testTo)) {
		t.Errorf("log lacks masked number: %s", line)
	}
	if strings.Contains(line, testTo) || strings.Contains(line, "987654") {
		t.Errorf("log leaks number or code: %s", line)
	}

	if _, err := sink.Send(context.Background(), testTo, "second"); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(files) != 2 {
		t.Errorf("files = %d, want one per message", len(files))
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestIsTemporary(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&client.TwilioRestError{Status: 429, Code: 20429}, true},
		{fmt.Errorf("w: %w", &client.TwilioRestError{Status: 502}), true},
		{&client.TwilioRestError{Status: 400, Code: 21211}, false},
		{&client.TwilioRestError{Status: 400, Code: 21610}, false},
		{&client.TwilioRestError{Status: 401, Code: 20003}, true},
		{&client.TwilioRestError{Status: 403, Code: 20005}, true},
		{&client.TwilioRestError{Status: 404, Code: 20404}, false},
		{io.EOF, true},
		{context.DeadlineExceeded, true},
		{errors.New("unknown"), true},
		{fmt.Errorf("x: %w", sms.ErrInvalid), false},
	}
	for _, c := range cases {
		if got := sms.IsTemporary(c.err); got != c.want {
			t.Errorf("IsTemporary(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestMaskPhone(t *testing.T) {
	t.Parallel()
	if got := sms.MaskPhone(testTo); got != "+44********23" {
		t.Errorf("MaskPhone = %q", got)
	}
	if got := sms.MaskPhone("+123"); got != "***" {
		t.Errorf("short: %q", got)
	}
}
