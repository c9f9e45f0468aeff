package testkit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPServer is a real SMTP server (github.com/emersion/go-smtp) on a
// loopback port that records what it receives. It can require AUTH PLAIN,
// speak STARTTLS or implicit TLS with a throw-away certificate, answer with
// scripted failures, and be stopped and restarted on the same port to test
// outages. Safe for concurrent use.
type SMTPServer struct {
	tb        testing.TB
	addr      string
	user      string
	pass      string
	tlsMode   string // "none", "starttls" or "tls", as in SMTP_URL
	serverTLS *tls.Config
	clientTLS *tls.Config
	readTO    time.Duration

	mu       sync.Mutex
	srv      *smtp.Server
	ln       net.Listener
	served   chan struct{} // closed when the current Serve returns
	msgs     []ReceivedMail
	changed  chan struct{} // closed and replaced whenever msgs grows
	failRcpt smtpFailure
	failData smtpFailure
	stats    SMTPStats
}

// SMTPStats counts what an SMTPServer saw.
type SMTPStats struct {
	// Connections is the number of TCP connections accepted.
	Connections int
	// Disconnects is the number of those connections closed since, by either
	// side.
	Disconnects int
	// Attempts is the number of RCPT TO commands (one per delivery attempt).
	Attempts int
	// Failures is the number of scripted failures answered.
	Failures int
	// Delivered is the number of messages accepted (len(Messages())).
	Delivered int
}

// smtpFailure is a scripted failure: the next n commands answer code/msg.
type smtpFailure struct {
	n    int
	code int
	msg  string
}

// ReceivedMail is one message accepted by an SMTPServer.
type ReceivedMail struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO).
	To []string
	// Data is the raw message as transmitted (after dot-unstuffing).
	Data []byte
	// Header is the parsed top-level header.
	Header mail.Header
	// Subject is the decoded Subject header.
	Subject string
	// MessageID is the Message-ID header, angle brackets included.
	MessageID string
	// Text is the decoded first text/plain part.
	Text string
	// HTML is the decoded first text/html part.
	HTML string
	// ParseErr is set when Data could not be parsed as MIME.
	ParseErr error
}

// SMTPOption configures StartSMTP.
type SMTPOption func(*SMTPServer)

// WithSMTPAuth makes the server advertise AUTH PLAIN and refuse MAIL FROM
// from clients that did not authenticate as user/pass.
func WithSMTPAuth(user, pass string) SMTPOption {
	return func(s *SMTPServer) { s.user, s.pass = user, pass }
}

// WithSMTPSTARTTLS makes the server offer STARTTLS with a self-signed
// certificate; trust it with ClientTLSConfig. URL says tls=starttls.
func WithSMTPSTARTTLS() SMTPOption {
	return func(s *SMTPServer) { s.tlsMode = "starttls" }
}

// WithSMTPImplicitTLS makes the server speak TLS from the first byte with a
// self-signed certificate; trust it with ClientTLSConfig. URL says tls=tls.
func WithSMTPImplicitTLS() SMTPOption {
	return func(s *SMTPServer) { s.tlsMode = "tls" }
}

// WithSMTPReadTimeout makes the server close connections idle for d (after a
// "421 Idle timeout" reply), like real servers do.
func WithSMTPReadTimeout(d time.Duration) SMTPOption {
	return func(s *SMTPServer) { s.readTO = d }
}

// StartSMTP starts an SMTP server on 127.0.0.1 and stops it at test cleanup.
func StartSMTP(tb testing.TB, opts ...SMTPOption) *SMTPServer {
	tb.Helper()
	s := &SMTPServer{tb: tb, tlsMode: "none", changed: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.tlsMode != "none" {
		s.serverTLS, s.clientTLS = smtpSelfSigned(tb)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testkit: listen for SMTP: %v", err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	tb.Cleanup(s.Stop)
	return s
}

// Addr is the server's "127.0.0.1:port"; it survives Restart.
func (s *SMTPServer) Addr() string { return s.addr }

// URL is an SMTP_URL for this server, with credentials when WithSMTPAuth was
// given and tls= matching the server's TLS mode.
func (s *SMTPServer) URL() string {
	u := url.URL{Scheme: "smtp", Host: s.addr, RawQuery: "tls=" + s.tlsMode}
	if s.user != "" {
		u.User = url.UserPassword(s.user, s.pass)
	}
	return u.String()
}

// ClientTLSConfig trusts the server's certificate (nil without TLS).
func (s *SMTPServer) ClientTLSConfig() *tls.Config {
	if s.clientTLS == nil {
		return nil
	}
	return s.clientTLS.Clone()
}

// FailNext makes the next n RCPT TO commands answer code (4xx or 5xx) with
// msg. A rejected RCPT is the usual place where servers refuse mail.
func (s *SMTPServer) FailNext(n, code int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failRcpt = smtpFailure{n: n, code: code, msg: msg}
}

// FailNextData makes the next n messages be refused after their DATA was
// received (the reply to the final "."), with code and msg.
func (s *SMTPServer) FailNextData(n, code int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failData = smtpFailure{n: n, code: code, msg: msg}
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *SMTPServer) Messages() []ReceivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ReceivedMail(nil), s.msgs...)
}

// WaitMessages waits until at least n messages were accepted and returns
// them; it fails tb after timeout.
func (s *SMTPServer) WaitMessages(tb testing.TB, n int, timeout time.Duration) []ReceivedMail {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, changed := len(s.msgs), s.changed
		if got >= n {
			msgs := append([]ReceivedMail(nil), s.msgs...)
			s.mu.Unlock()
			return msgs
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("testkit: SMTP server got %d messages within %v, want %d", got, timeout, n)
			return nil
		}
	}
}

// Stats returns the counters.
func (s *SMTPServer) Stats() SMTPStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Delivered = len(s.msgs)
	return st
}

// Connections is Stats().Connections.
func (s *SMTPServer) Connections() int { return s.Stats().Connections }

// Attempts is Stats().Attempts.
func (s *SMTPServer) Attempts() int { return s.Stats().Attempts }

// Stop closes the listener and every open connection (clients see the
// connection drop, like a crashed server). Idempotent.
func (s *SMTPServer) Stop() {
	s.mu.Lock()
	srv, ln, served := s.srv, s.ln, s.served
	s.srv, s.ln = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	// Close the listener ourselves too: if Serve had not registered it yet,
	// srv.Close could not, and Accept would block forever.
	_ = ln.Close()
	<-served
}

// Restart starts the server again on the same port after Stop. Received
// messages and counters are kept.
func (s *SMTPServer) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if running {
		s.tb.Fatalf("testkit: SMTP Restart while running")
	}
	var ln net.Listener
	var err error
	// The port was just released; binding it again normally succeeds at
	// once (Go sets SO_REUSEADDR) but allow a moment for the kernel.
	for range 100 {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("testkit: SMTP restart on %s: %v", s.addr, err)
	}
	s.serve(ln)
}

// serve starts a go-smtp server on ln.
func (s *SMTPServer) serve(ln net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		sess := &smtpSession{srv: s}
		if s.user != "" {
			return &smtpAuthSession{smtpSession: sess}, nil
		}
		return sess, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = s.readTO
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 10 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln = &smtpCountingListener{Listener: ln, srv: s}
	if s.tlsMode == "starttls" {
		srv.TLSConfig = s.serverTLS
	}
	if s.tlsMode == "tls" {
		ln = tls.NewListener(ln, s.serverTLS)
	}
	served := make(chan struct{})
	s.mu.Lock()
	s.srv, s.ln, s.served = srv, ln, served
	s.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
}

// smtpCountingListener counts accepted connections.
type smtpCountingListener struct {
	net.Listener
	srv *SMTPServer
}

func (l *smtpCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.srv.mu.Lock()
	l.srv.stats.Connections++
	l.srv.mu.Unlock()
	return &smtpCountingConn{Conn: c, srv: l.srv}, nil
}

// smtpCountingConn counts its own closing once. go-smtp closes every
// connection when the session ends, whichever side ended it.
type smtpCountingConn struct {
	net.Conn
	srv  *SMTPServer
	once sync.Once
}

func (c *smtpCountingConn) Close() error {
	c.once.Do(func() {
		c.srv.mu.Lock()
		c.srv.stats.Disconnects++
		c.srv.mu.Unlock()
	})
	return c.Conn.Close()
}

// smtpSession is one SMTP session.
type smtpSession struct {
	srv    *SMTPServer
	authed bool
	from   string
	to     []string
}

func (ss *smtpSession) Reset() { ss.from, ss.to = "", nil }

func (ss *smtpSession) Logout() error { return nil }

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.user != "" && !ss.authed {
		return smtp.ErrAuthRequired
	}
	ss.from, ss.to = from, nil
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Attempts++
	if err := s.failRcpt.take(&s.stats); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failData.take(&s.stats); err != nil {
		return err
	}
	m := smtpParse(data)
	m.From, m.To = ss.from, append([]string(nil), ss.to...)
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// take consumes one scripted failure, if any. Callers hold the server lock.
func (f *smtpFailure) take(st *SMTPStats) error {
	if f.n <= 0 {
		return nil
	}
	f.n--
	st.Failures++
	return &smtp.SMTPError{Code: f.code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: f.msg}
}

// smtpAuthSession adds AUTH PLAIN to a session.
type smtpAuthSession struct {
	*smtpSession
}

func (as *smtpAuthSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (as *smtpAuthSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != as.srv.user || pass != as.srv.pass {
			return smtp.ErrAuthFailed
		}
		as.authed = true
		return nil
	}), nil
}

// smtpParse parses a raw message into its interesting parts.
func smtpParse(data []byte) ReceivedMail {
	m := ReceivedMail{Data: data}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		m.ParseErr = err
		return m
	}
	m.Header = msg.Header
	m.MessageID = msg.Header.Get("Message-ID")
	dec := new(mime.WordDecoder)
	if m.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		m.ParseErr = fmt.Errorf("decode subject: %w", err)
	}
	if err := smtpWalk(&m, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body); err != nil {
		m.ParseErr = errors.Join(m.ParseErr, err)
	}
	return m
}

// smtpWalk descends into multipart bodies and stores the first text/plain and
// text/html leaves, decoded.
func smtpWalk(m *ReceivedMail, contentType, cte string, body io.Reader) error {
	if contentType == "" {
		contentType = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("content type %q: %w", contentType, err)
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			// NextRawPart leaves quoted-printable alone: we decode all
			// transfer encodings the same way below.
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("multipart: %w", err)
			}
			if err := smtpWalk(m, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p); err != nil {
				return err
			}
		}
	}
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("decode %s body: %w", mediaType, err)
	}
	switch {
	case mediaType == "text/plain" && m.Text == "":
		m.Text = strings.ReplaceAll(string(b), "\r\n", "\n")
	case mediaType == "text/html" && m.HTML == "":
		m.HTML = strings.ReplaceAll(string(b), "\r\n", "\n")
	}
	return nil
}

// smtpSelfSigned makes a throw-away certificate for 127.0.0.1 and localhost
// and a client config trusting it.
func smtpSelfSigned(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testkit: generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sharelinks test SMTP"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("testkit: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("testkit: parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}
