package mail_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/mail"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

const testFrom = "Sharelinks Test <noreply@share.example.com>"

func newSender(t *testing.T, rawURL string, opts ...mail.SMTPOption) *mail.SMTP {
	t.Helper()
	opts = append([]mail.SMTPOption{mail.WithConnectTimeout(2 * time.Second), mail.WithSendTimeout(5 * time.Second)}, opts...)
	s, err := mail.NewSMTP(rawURL, testFrom, opts...)
	if err != nil {
		t.Fatalf("NewSMTP: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testMessage(i int) mail.Message {
	return mail.Message{
		To:        "Bob Example <bob@example.com>",
		Subject:   fmt.Sprintf("Dossier n°%d shared with you", i),
		Text:      fmt.Sprintf("Hello Bob,\nopen https://share.example.com/l/%d\n", i),
		HTML:      fmt.Sprintf(`<p>Hello Bob, <a href="https://share.example.com/l/%d">open</a> — ünïcode</p>`, i),
		MessageID: fmt.Sprintf("<notif-%d@share.example.com>", i),
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSMTPSendParsesOnServer(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t, testkit.WithSMTPAuth("mailer", "s3cret pass"))
	s := newSender(t, srv.URL())

	id, err := s.Send(context.Background(), testMessage(1))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if id != "<notif-1@share.example.com>" {
		t.Errorf("provider id = %q, want the Message-ID", id)
	}
	msgs := srv.WaitMessages(t, 1, 5*time.Second)
	m := msgs[0]
	if m.ParseErr != nil {
		t.Fatalf("server could not parse message: %v\n%s", m.ParseErr, m.Data)
	}
	if m.From != "noreply@share.example.com" || len(m.To) != 1 || m.To[0] != "bob@example.com" {
		t.Errorf("envelope = %q -> %q", m.From, m.To)
	}
	if m.Subject != "Dossier n°1 shared with you" {
		t.Errorf("subject = %q", m.Subject)
	}
	if m.MessageID != "<notif-1@share.example.com>" {
		t.Errorf("Message-ID = %q", m.MessageID)
	}
	if got := m.Header.Get("From"); !strings.Contains(got, "noreply@share.example.com") || !strings.Contains(got, "Sharelinks Test") {
		t.Errorf("From header = %q", got)
	}
	if m.Header.Get("Auto-Submitted") != "auto-generated" {
		t.Errorf("Auto-Submitted = %q", m.Header.Get("Auto-Submitted"))
	}
	if m.Text != "Hello Bob,\nopen https://share.example.com/l/1\n" {
		t.Errorf("text part = %q", m.Text)
	}
	if !strings.Contains(m.HTML, `<a href="https://share.example.com/l/1">open</a> — ünïcode`) {
		t.Errorf("html part = %q", m.HTML)
	}
}

func TestSMTPReplyCodesClassified(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL())
	ctx := context.Background()

	cases := []struct {
		name      string
		fail      func()
		temporary bool
	}{
		{"rcpt 451", func() { srv.FailNext(1, 451, "try again later") }, true},
		{"rcpt 550", func() { srv.FailNext(1, 550, "no such user") }, false},
		{"data 452", func() { srv.FailNextData(1, 452, "insufficient storage") }, true},
		{"data 554", func() { srv.FailNextData(1, 554, "rejected as spam") }, false},
	}
	for i, c := range cases {
		c.fail()
		_, err := s.Send(ctx, testMessage(i))
		if err == nil {
			t.Fatalf("%s: Send succeeded", c.name)
		}
		if got := mail.IsTemporary(err); got != c.temporary {
			t.Errorf("%s: IsTemporary = %v, want %v (err: %v)", c.name, got, c.temporary, err)
		}
		// The recipient's address must not leak into logs through the error.
		if strings.Contains(err.Error(), "bob@example.com") {
			t.Errorf("%s: error names the recipient: %v", c.name, err)
		}
	}
	// A clean rejection leaves the session usable: the next message goes over
	// the same connection.
	if _, err := s.Send(ctx, testMessage(99)); err != nil {
		t.Fatalf("Send after rejections: %v", err)
	}
	if got := srv.Connections(); got != 1 {
		t.Errorf("connections = %d, want 1", got)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Errorf("delivered = %d, want 1", got)
	}
}

func TestSMTPReusesOneConnection(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL())
	for i := range 5 {
		if _, err := s.Send(context.Background(), testMessage(i)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	srv.WaitMessages(t, 5, 5*time.Second)
	if got := srv.Connections(); got != 1 {
		t.Errorf("connections = %d, want 1 for 5 sequential messages", got)
	}
}

func TestSMTPConcurrentSendsBoundedConnections(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL(), mail.WithMaxConns(3))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if _, err := s.Send(context.Background(), testMessage(i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Send: %v", err)
	}
	msgs := srv.WaitMessages(t, 20, 5*time.Second)
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.MessageID] = true
	}
	if len(seen) != 20 {
		t.Errorf("distinct messages = %d, want 20", len(seen))
	}
	if got := srv.Connections(); got < 1 || got > 3 {
		t.Errorf("connections = %d, want 1..3", got)
	}
}

func TestSMTPServerDownThenUp(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL())
	ctx := context.Background()

	if _, err := s.Send(ctx, testMessage(1)); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	srv.Stop()
	_, err := s.Send(ctx, testMessage(2))
	if err == nil {
		t.Fatal("Send with server down succeeded")
	}
	if !mail.IsTemporary(err) {
		t.Errorf("server down: IsTemporary = false (err: %v)", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("server down: err = %v, want connection refused in chain", err)
	}

	srv.Restart()
	if _, err := s.Send(ctx, testMessage(3)); err != nil {
		t.Fatalf("Send after restart: %v", err)
	}
	msgs := srv.WaitMessages(t, 2, 5*time.Second)
	if msgs[1].MessageID != "<notif-3@share.example.com>" {
		t.Errorf("second delivered = %q", msgs[1].MessageID)
	}
	if got := srv.Connections(); got != 2 {
		t.Errorf("connections = %d, want 2 (one before, one after restart)", got)
	}
}

func TestSMTPRedialsAfterServerIdleClose(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t, testkit.WithSMTPReadTimeout(100*time.Millisecond))
	s := newSender(t, srv.URL())
	ctx := context.Background()
	if _, err := s.Send(ctx, testMessage(1)); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	waitFor(t, 5*time.Second, func() bool { return srv.Stats().Disconnects == 1 }, "server idle close")
	// The pooled connection is dead; Send notices before the transaction
	// and redials without surfacing an error.
	if _, err := s.Send(ctx, testMessage(2)); err != nil {
		t.Fatalf("Send after idle close: %v", err)
	}
	srv.WaitMessages(t, 2, 5*time.Second)
	if got := srv.Connections(); got != 2 {
		t.Errorf("connections = %d, want 2", got)
	}
}

func TestSMTPTLSModes(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]testkit.SMTPOption{
		"starttls": testkit.WithSMTPSTARTTLS(),
		"implicit": testkit.WithSMTPImplicitTLS(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := testkit.StartSMTP(t, opt, testkit.WithSMTPAuth("mailer", "pw"))
			s := newSender(t, srv.URL(), mail.WithTLSConfig(srv.ClientTLSConfig()))
			if _, err := s.Send(context.Background(), testMessage(1)); err != nil {
				t.Fatalf("Send over %s: %v", srv.URL(), err)
			}
			if m := srv.WaitMessages(t, 1, 5*time.Second)[0]; m.MessageID != "<notif-1@share.example.com>" {
				t.Errorf("Message-ID = %q", m.MessageID)
			}
		})
	}

	// An untrusted certificate is a connection problem: temporary.
	srv := testkit.StartSMTP(t, testkit.WithSMTPSTARTTLS())
	s := newSender(t, srv.URL())
	_, err := s.Send(context.Background(), testMessage(1))
	if err == nil || !mail.IsTemporary(err) {
		t.Errorf("untrusted cert: err = %v, want temporary error", err)
	}
}

func TestSMTPStartTLSRequiredByDefault(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t) // plaintext only
	url := strings.Replace(srv.URL(), "?tls=none", "", 1)
	s := newSender(t, url)
	if _, err := s.Send(context.Background(), testMessage(1)); err == nil {
		t.Fatal("default tls mode sent over a server without STARTTLS")
	}
	if n := srv.Attempts(); n != 0 {
		t.Errorf("attempts = %d, want 0", n)
	}
}

func TestSMTPWrongPasswordIsTemporary(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t, testkit.WithSMTPAuth("mailer", "right"))
	s := newSender(t, strings.Replace(srv.URL(), ":right@", ":wrong@", 1))
	_, err := s.Send(context.Background(), testMessage(1))
	if err == nil {
		t.Fatal("Send with wrong password succeeded")
	}
	// 535 at AUTH is a configuration problem, not a verdict on the message.
	if !mail.IsTemporary(err) {
		t.Errorf("IsTemporary = false for auth failure: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestSMTPRejectsHeaderInjection(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL())
	cases := map[string]func(*mail.Message){
		"to":         func(m *mail.Message) { m.To = "bob@example.com\r\nBcc: eve@example.com" },
		"subject":    func(m *mail.Message) { m.Subject = "Hi\nBcc: eve@example.com" },
		"message id": func(m *mail.Message) { m.MessageID = "<a@b>\r\nX: y" },
		"bad to":     func(m *mail.Message) { m.To = "not an address" },
		"no body":    func(m *mail.Message) { m.Text, m.HTML = "", "" },
	}
	for name, mutate := range cases {
		m := testMessage(1)
		mutate(&m)
		_, err := s.Send(context.Background(), m)
		if !errors.Is(err, mail.ErrInvalidMessage) {
			t.Errorf("%s: err = %v, want ErrInvalidMessage", name, err)
		}
		if mail.IsTemporary(err) {
			t.Errorf("%s: IsTemporary = true", name)
		}
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("connections = %d, want 0 (invalid messages must not reach the server)", n)
	}
}

func TestSMTPHonoursContext(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Send(ctx, testMessage(1))
	if err == nil || !errors.Is(err, context.Canceled) || !mail.IsTemporary(err) {
		t.Errorf("cancelled ctx: err = %v, want temporary context.Canceled", err)
	}
	// The sender stays usable.
	if _, err := s.Send(context.Background(), testMessage(2)); err != nil {
		t.Fatalf("Send after cancelled one: %v", err)
	}
}

func TestSMTPClose(t *testing.T) {
	t.Parallel()
	srv := testkit.StartSMTP(t)
	s := newSender(t, srv.URL())
	if _, err := s.Send(context.Background(), testMessage(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return srv.Stats().Disconnects == 1 }, "QUIT on Close")
	if _, err := s.Send(context.Background(), testMessage(2)); !errors.Is(err, mail.ErrClosed) {
		t.Errorf("Send after Close: err = %v, want ErrClosed", err)
	}
}

func TestNewSMTPValidatesConfig(t *testing.T) {
	t.Parallel()
	bad := map[string][2]string{
		"scheme":   {"http://host:25", testFrom},
		"tls mode": {"smtp://host:25?tls=maybe", testFrom},
		"port":     {"smtp://host:99999", testFrom},
		"no host":  {"smtp://:25", testFrom},
		"auth":     {"smtp://u:p@host?auth=telepathy", testFrom},
		"from":     {"smtp://host", "not an address"},
	}
	for name, c := range bad {
		if _, err := mail.NewSMTP(c[0], c[1]); err == nil {
			t.Errorf("%s: NewSMTP(%q, %q) succeeded", name, c[0], c[1])
		}
	}
	if _, err := mail.NewSMTP("smtp://user:p%40ss@mail.example.com?tls=tls", testFrom); err != nil {
		t.Errorf("valid URL: %v", err)
	}
	_, err := mail.NewSMTP("smtp://user:hunter2@host:25?tls=bogus", testFrom)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("config error leaks password or is missing: %v", err)
	}
}

func TestIsTemporary(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, true},
		{fmt.Errorf("wrapped: %w", syscall.ECONNRESET), true},
		{context.DeadlineExceeded, true},
		{errors.New("something unknown"), true},
		{fmt.Errorf("x: %w", mail.ErrInvalidMessage), false},
	}
	for _, c := range cases {
		if got := mail.IsTemporary(c.err); got != c.want {
			t.Errorf("IsTemporary(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestMaskAddress(t *testing.T) {
	t.Parallel()
	if got := mail.MaskAddress("bob@example.com"); got != "b***@example.com" {
		t.Errorf("got %q", got)
	}
	if got := mail.MaskAddress("nonsense"); got != "***" {
		t.Errorf("got %q", got)
	}
}
