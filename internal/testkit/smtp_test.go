package testkit

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpRawMessage is a multipart/mixed message wrapping a multipart/alternative
// with a quoted-printable text part and a base64 HTML part, and an encoded
// subject: the shapes a real mail library produces.
const smtpRawMessage = "From: Sender <s@example.com>\r\n" +
	"To: r@example.com\r\n" +
	"Subject: =?UTF-8?q?Caf=C3=A9_files?=\r\n" +
	"Message-ID: <abc@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=outer\r\n" +
	"\r\n" +
	"--outer\r\n" +
	"Content-Type: multipart/alternative; boundary=inner\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Caf=C3=A9 line one=\r\n" +
	" continued\r\n" +
	"line two\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+Q2Fmw6kgPGI+Ym9sZDwv\r\n" +
	"Yj48L3A+\r\n" +
	"--inner--\r\n" +
	"--outer--\r\n"

func smtpTestSend(t *testing.T, s *SMTPServer, auth sasl.Client) error {
	t.Helper()
	var c *smtp.Client
	var err error
	switch s.tlsMode {
	case "tls":
		c, err = smtp.DialTLS(s.Addr(), s.ClientTLSConfig())
	case "starttls":
		c, err = smtp.DialStartTLS(s.Addr(), s.ClientTLSConfig())
	default:
		c, err = smtp.Dial(s.Addr())
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	return c.SendMail("s@example.com", []string{"r@example.com"}, strings.NewReader(smtpRawMessage))
}

func TestSMTPServerParsesMIME(t *testing.T) {
	t.Parallel()
	s := StartSMTP(t)
	if err := smtpTestSend(t, s, nil); err != nil {
		t.Fatal(err)
	}
	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	if m.ParseErr != nil {
		t.Fatal(m.ParseErr)
	}
	if m.From != "s@example.com" || len(m.To) != 1 || m.To[0] != "r@example.com" {
		t.Errorf("envelope %q -> %v", m.From, m.To)
	}
	if m.Subject != "Café files" || m.MessageID != "<abc@example.com>" {
		t.Errorf("subject %q, id %q", m.Subject, m.MessageID)
	}
	if m.Text != "Café line one continued\nline two" {
		t.Errorf("text = %q", m.Text)
	}
	if m.HTML != "<p>Café <b>bold</b></p>" {
		t.Errorf("html = %q", m.HTML)
	}
	if !strings.HasPrefix(string(m.Data), "From: Sender") {
		t.Errorf("raw data = %q", m.Data)
	}
	st := s.Stats()
	if st.Connections != 1 || st.Attempts != 1 || st.Delivered != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestSMTPServerFailNext(t *testing.T) {
	t.Parallel()
	s := StartSMTP(t)
	s.FailNext(2, 451, "busy")
	for range 2 {
		err := smtpTestSend(t, s, nil)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 451 {
			t.Fatalf("err = %v, want 451", err)
		}
	}
	s.FailNextData(1, 554, "spam")
	err := smtpTestSend(t, s, nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("err = %v, want 554", err)
	}
	if err := smtpTestSend(t, s, nil); err != nil {
		t.Fatalf("after failures: %v", err)
	}
	if st := s.Stats(); st.Failures != 3 || st.Attempts != 4 || st.Delivered != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestSMTPServerAuthAndTLS(t *testing.T) {
	t.Parallel()
	for _, opt := range []SMTPOption{WithSMTPSTARTTLS(), WithSMTPImplicitTLS()} {
		s := StartSMTP(t, opt, WithSMTPAuth("u", "p w"))
		if !strings.Contains(s.URL(), "tls="+s.tlsMode) || !strings.Contains(s.URL(), "u:p%20w@") {
			t.Errorf("URL = %s", s.URL())
		}
		if err := smtpTestSend(t, s, nil); err == nil {
			t.Errorf("%s: unauthenticated send accepted", s.tlsMode)
		}
		if err := smtpTestSend(t, s, sasl.NewPlainClient("", "u", "wrong")); err == nil {
			t.Errorf("%s: wrong password accepted", s.tlsMode)
		}
		if err := smtpTestSend(t, s, sasl.NewPlainClient("", "u", "p w")); err != nil {
			t.Errorf("%s: %v", s.tlsMode, err)
		}
	}
	// Without the test CA the certificate is not trusted.
	s := StartSMTP(t, WithSMTPImplicitTLS())
	if _, err := smtp.DialTLS(s.Addr(), &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
		t.Error("self-signed certificate trusted without its CA")
	}
}

func TestSMTPServerStopRestart(t *testing.T) {
	t.Parallel()
	s := StartSMTP(t)
	addr := s.Addr()
	if err := smtpTestSend(t, s, nil); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop() // idempotent
	if err := smtpTestSend(t, s, nil); err == nil {
		t.Fatal("send to stopped server succeeded")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Errorf("address changed: %s -> %s", addr, s.Addr())
	}
	if err := smtpTestSend(t, s, nil); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if n := len(s.WaitMessages(t, 2, 5*time.Second)); n != 2 {
		t.Errorf("messages = %d", n)
	}
}
