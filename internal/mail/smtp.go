package mail

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	gosmtp "github.com/wneessen/go-mail/smtp"
)

// Defaults for SMTP options.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultSendTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 30 * time.Second
	DefaultMaxConns       = 2
)

// TLS modes accepted in SMTP_URL's tls= parameter.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS; required
	TLSImplicit = "tls"      // TLS from the first byte ("SMTPS", port 465)
	TLSNone     = "none"     // plaintext; for local relays and tests only
)

// SMTPOption tunes NewSMTP.
type SMTPOption func(*smtpConfig)

type smtpConfig struct {
	connectTimeout time.Duration
	sendTimeout    time.Duration
	idleTimeout    time.Duration
	maxConns       int
	tlsConfig      *tls.Config
	logger         *slog.Logger
	helo           string
}

// WithConnectTimeout bounds dialling plus the greeting, STARTTLS and AUTH, and
// also each later SMTP command (go-mail applies one deadline per command).
func WithConnectTimeout(d time.Duration) SMTPOption {
	return func(c *smtpConfig) { c.connectTimeout = d }
}

// WithSendTimeout bounds one whole Send, including waiting for a free
// connection and a redial.
func WithSendTimeout(d time.Duration) SMTPOption {
	return func(c *smtpConfig) { c.sendTimeout = d }
}

// WithIdleTimeout drops pooled connections unused for longer than d instead of
// reusing them: servers close idle sessions (often after 60-300 s) and a
// fresh dial is cheaper than a failed NOOP probe.
func WithIdleTimeout(d time.Duration) SMTPOption {
	return func(c *smtpConfig) { c.idleTimeout = d }
}

// WithMaxConns caps concurrent SMTP connections (and so concurrent sends).
func WithMaxConns(n int) SMTPOption {
	return func(c *smtpConfig) { c.maxConns = n }
}

// WithTLSConfig sets the TLS configuration (e.g. RootCAs for a private CA).
// ServerName defaults to the URL's host.
func WithTLSConfig(cfg *tls.Config) SMTPOption {
	return func(c *smtpConfig) { c.tlsConfig = cfg }
}

// WithLogger sets the logger for connection events (never message content).
func WithLogger(l *slog.Logger) SMTPOption {
	return func(c *smtpConfig) { c.logger = l }
}

// WithHELO sets the name sent in EHLO (default: the machine's host name).
func WithHELO(name string) SMTPOption {
	return func(c *smtpConfig) { c.helo = name }
}

// SMTP is a Sender that keeps up to MaxConns connections open and reuses them
// across messages. A connection broken while idle (server timeout, restart) is
// detected before the message is sent and replaced transparently; a failure
// in the middle of a transaction is returned (temporary) and the connection
// discarded, because retrying it here could deliver the message twice.
type SMTP struct {
	client  *gomail.Client // configuration only; connections are ours
	from    *netmail.Address
	cfg     smtpConfig
	network string
	addr    string
	tlsMode string
	logger  *slog.Logger

	slots chan struct{} // one token per allowed connection

	mu     sync.Mutex
	idle   []*smtpConn // most recently used last
	closed bool
}

// smtpConn is one open SMTP session.
type smtpConn struct {
	c        *gosmtp.Client
	raw      net.Conn
	lastUsed time.Time
}

// dialHolderKey carries a *dialHolder through go-mail's dial call so our dial
// function can hand the raw connection back to us.
type dialHolderKey struct{}

// dialHolder receives the TCP connection of a dial in progress and closes it
// if the dial is aborted (a close, unlike a deadline, cannot be overridden by
// go-mail's own SetDeadline calls).
type dialHolder struct {
	mu      sync.Mutex
	conn    net.Conn
	aborted bool
}

func (h *dialHolder) set(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conn = c
	if h.aborted {
		_ = c.Close()
	}
}

func (h *dialHolder) abort() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aborted = true
	if h.conn != nil {
		_ = h.conn.Close()
	}
}

func (h *dialHolder) get() net.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conn
}

// NewSMTP returns an SMTP sender for rawURL
// ("smtp://user:pass@host:port?tls=starttls|tls|none&auth=plain"), sending
// as from ("Name <addr>"). It does not connect: the first Send does.
//
// tls defaults to starttls (required, never opportunistic). Default ports:
// 587 (starttls), 465 (tls), 25 (none). With credentials, auth defaults to
// PLAIN, which go-mail refuses over a plaintext link to a non-loopback host;
// other values are go-mail's names (login, cram-md5, scram-sha-256,
// plain-noenc, auto, ...).
func NewSMTP(rawURL, from string, opts ...SMTPOption) (*SMTP, error) {
	cfg := smtpConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.connectTimeout = cmp.Or(cfg.connectTimeout, DefaultConnectTimeout)
	cfg.sendTimeout = cmp.Or(cfg.sendTimeout, DefaultSendTimeout)
	cfg.idleTimeout = cmp.Or(cfg.idleTimeout, DefaultIdleTimeout)
	cfg.maxConns = max(cmp.Or(cfg.maxConns, DefaultMaxConns), 1)
	logger := cmp.Or(cfg.logger, slog.New(slog.DiscardHandler))

	fromAddr, err := parseFrom(from)
	if err != nil {
		return nil, err
	}

	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse echoes the URL, password included: do not wrap it.
		return nil, errors.New("parse SMTP URL: malformed URL")
	}
	if u.Scheme != "smtp" && u.Scheme != "smtps" {
		return nil, fmt.Errorf("parse SMTP URL: scheme %q, want smtp", u.Scheme)
	}
	q := u.Query()
	mode := strings.ToLower(q.Get("tls"))
	if mode == "" {
		mode = TLSStartTLS
		if u.Scheme == "smtps" {
			mode = TLSImplicit
		}
	}
	host := u.Hostname()
	if host == "" {
		return nil, errors.New("parse SMTP URL: missing host")
	}
	var port int
	switch mode {
	case TLSStartTLS:
		port = gomail.DefaultPortTLS
	case TLSImplicit:
		port = gomail.DefaultPortSSL
	case TLSNone:
		port = gomail.DefaultPort
	default:
		return nil, fmt.Errorf("parse SMTP URL: tls=%q, want starttls, tls or none", mode)
	}
	if p := u.Port(); p != "" {
		port, err = strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("parse SMTP URL: bad port %q", p)
		}
	}

	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.tlsConfig != nil {
		tlsCfg = cfg.tlsConfig.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host
	}

	s := &SMTP{
		from:    fromAddr,
		cfg:     cfg,
		network: "tcp",
		addr:    net.JoinHostPort(host, strconv.Itoa(port)),
		tlsMode: mode,
		logger:  logger,
		slots:   make(chan struct{}, cfg.maxConns),
	}

	gopts := []gomail.Option{
		gomail.WithPort(port),
		gomail.WithTimeout(cfg.connectTimeout),
		gomail.WithTLSConfig(tlsCfg),
		// Our dial function does implicit TLS itself and hands us the raw
		// connection, so a cancelled context can abort a blocked command.
		gomail.WithDialContextFunc(s.dialContext(tlsCfg)),
	}
	switch mode {
	case TLSStartTLS:
		gopts = append(gopts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit, TLSNone:
		gopts = append(gopts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if cfg.helo != "" {
		gopts = append(gopts, gomail.WithHELO(cfg.helo))
	}
	if u.User != nil && u.User.Username() != "" {
		pass, _ := u.User.Password()
		authType := gomail.SMTPAuthPlain
		if a := q.Get("auth"); a != "" {
			if err := authType.UnmarshalString(a); err != nil {
				return nil, fmt.Errorf("parse SMTP URL: %w", err)
			}
		}
		gopts = append(gopts,
			gomail.WithSMTPAuth(authType),
			gomail.WithUsername(u.User.Username()),
			gomail.WithPassword(pass))
	}
	client, err := gomail.NewClient(host, gopts...)
	if err != nil {
		return nil, fmt.Errorf("configure SMTP client: %w", err)
	}
	s.client = client
	return s, nil
}

// dialContext returns the dial function given to go-mail. It records the
// TCP connection (under TLS, if any) in the dialHolder found in ctx.
func (s *SMTP) dialContext(tlsCfg *tls.Config) gomail.DialContextFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		if s.tlsMode != TLSImplicit {
			conn, err := d.DialContext(ctx, network, address)
			if err == nil {
				if h, ok := ctx.Value(dialHolderKey{}).(*dialHolder); ok {
					h.set(conn)
				}
			}
			return conn, err
		}
		conn, err := (&tls.Dialer{NetDialer: d, Config: tlsCfg}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		tc := conn.(*tls.Conn)
		if h, ok := ctx.Value(dialHolderKey{}).(*dialHolder); ok {
			h.set(tc.NetConn())
		}
		// Return the *tls.Conn itself: go-mail's SMTP client recognises it
		// and treats the session as encrypted (needed for PLAIN auth).
		return tc, nil
	}
}

// Send delivers m over a pooled connection. See Sender.
func (s *SMTP) Send(ctx context.Context, m Message) (string, error) {
	msg, rcpt, err := buildMsg(s.from, m)
	if err != nil {
		return "", err
	}
	id, err := s.send(ctx, msg)
	if err != nil {
		return "", redactAddress(fmt.Errorf("send mail %s: %w", msg.GetMessageID(), err), rcpt)
	}
	return id, nil
}

// send does the work of Send; its errors may name the recipient.
func (s *SMTP) send(ctx context.Context, msg *gomail.Msg) (string, error) {
	var err error
	ctx, cancel := context.WithTimeout(ctx, s.cfg.sendTimeout)
	defer cancel()

	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("wait for SMTP connection: %w", ctx.Err())
	}
	defer func() { <-s.slots }()

	conn, reused, err := s.acquire(ctx)
	if err != nil {
		return "", err
	}
	err = s.sendOn(ctx, conn, msg)
	if err != nil && reused && isStaleConn(err) {
		// The pooled connection died while idle; nothing was transmitted, so
		// a fresh connection cannot cause a duplicate.
		s.logger.DebugContext(ctx, "smtp: pooled connection was stale, redialling", "addr", s.addr)
		s.discard(conn)
		conn, err = s.dial(ctx)
		if err != nil {
			return "", err
		}
		err = s.sendOn(ctx, conn, msg)
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(ctxErr, err)
		}
		if reusableAfter(err) && ctx.Err() == nil {
			s.release(conn)
		} else {
			s.discard(conn)
		}
		return "", err
	}
	s.release(conn)
	if qid := queueID(msg.ServerResponse()); qid != "" {
		return qid, nil
	}
	return msg.GetMessageID(), nil
}

// sendOn runs one SMTP transaction on conn. A context cancelled meanwhile
// closes the TCP connection so a blocked read or write returns at once; the
// connection is then discarded by the caller.
func (s *SMTP) sendOn(ctx context.Context, conn *smtpConn, msg *gomail.Msg) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.raw.Close() })
	defer stop()
	return s.client.SendWithSMTPClient(conn.c, msg)
}

// acquire returns a fresh-enough idle connection or dials a new one. reused
// tells whether the connection had been used before.
func (s *SMTP) acquire(ctx context.Context) (conn *smtpConn, reused bool, err error) {
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, ErrClosed
	}
	var stale []*smtpConn
	for len(s.idle) > 0 {
		c := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if now.Sub(c.lastUsed) > s.cfg.idleTimeout {
			stale = append(stale, c)
			continue
		}
		conn = c
		break
	}
	s.mu.Unlock()
	for _, c := range stale {
		s.discard(c)
	}
	if conn != nil {
		return conn, true, nil
	}
	conn, err = s.dial(ctx)
	return conn, false, err
}

// dial opens, greets, secures and authenticates a new connection.
func (s *SMTP) dial(ctx context.Context) (*smtpConn, error) {
	h := &dialHolder{}
	// go-mail bounds the dial by ctx, but the greeting, STARTTLS and AUTH
	// only by its own deadline: closing the connection on cancellation
	// covers them too.
	stop := context.AfterFunc(ctx, h.abort)
	c, err := s.client.DialToSMTPClientWithContext(context.WithValue(ctx, dialHolderKey{}, h))
	aborted := !stop()
	raw := h.get()
	if err != nil {
		if raw != nil {
			_ = raw.Close()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(ctxErr, err)
		}
		s.logger.WarnContext(ctx, "smtp: connect failed", "addr", s.addr, "err", err)
		return nil, &dialError{err: err}
	}
	if aborted {
		// Cancelled just as go-mail finished: abort closed the connection.
		return nil, &dialError{err: ctx.Err()}
	}
	s.logger.DebugContext(ctx, "smtp: connected", "addr", s.addr)
	return &smtpConn{c: c, raw: raw, lastUsed: time.Now()}, nil
}

// release returns conn to the idle pool.
func (s *SMTP) release(conn *smtpConn) {
	conn.lastUsed = time.Now()
	s.mu.Lock()
	if !s.closed {
		s.idle = append(s.idle, conn)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.quit(conn)
}

// discard closes conn without QUIT: it is broken or in an unknown state.
func (s *SMTP) discard(conn *smtpConn) {
	if conn.raw != nil {
		_ = conn.raw.Close()
	}
	_ = conn.c.Close()
}

// quit ends a healthy session politely, bounded by the connect timeout.
func (s *SMTP) quit(conn *smtpConn) {
	_ = conn.c.UpdateDeadline(s.cfg.connectTimeout)
	_ = s.client.CloseWithSMTPClient(conn.c)
	s.discard(conn)
}

// Close ends all idle sessions. In-flight sends finish and then close their
// connections; later Sends fail with ErrClosed.
func (s *SMTP) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.closed = true
	s.mu.Unlock()
	for _, c := range idle {
		s.quit(c)
	}
	return nil
}

// isStaleConn tells whether err means the connection was dead before the
// transaction started (go-mail probes it with NOOP first).
func isStaleConn(err error) bool {
	var se *gomail.SendError
	return errors.As(err, &se) && se.Reason == gomail.ErrConnCheck
}

// reusableAfter tells whether the session is still in a known-good state after
// err: a clean SMTP rejection of MAIL, RCPT or the data (go-mail resets the
// transaction) leaves it usable; anything else may have left it mid-command.
func reusableAfter(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) || se.ErrorCode() == 0 || se.ErrorCode() == 421 {
		return false
	}
	switch se.Reason {
	case gomail.ErrSMTPMailFrom, gomail.ErrSMTPRcptTo, gomail.ErrSMTPDataClose:
		return true
	}
	return false
}

// queueIDPattern finds the queue id in common "250 ... queued as ID" replies
// (Postfix, Exim, Sendmail variants).
var queueIDPattern = regexp.MustCompile(`(?i)queued as ([A-Za-z0-9._-]+)`)

// queueID extracts the server's queue id from a DATA reply, or "".
func queueID(resp string) string {
	if m := queueIDPattern.FindStringSubmatch(resp); m != nil {
		return m[1]
	}
	return ""
}

// Both implementations satisfy Sender.
var (
	_ Sender = (*SMTP)(nil)
	_ Sender = (*FileSink)(nil)
)
