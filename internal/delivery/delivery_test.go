package delivery_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/delivery"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/mail"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
	"github.com/sharelinks/sharelinks/internal/sms"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type notifierOpts struct {
	smtp      *testkit.SMTPServer
	twilio    *testkit.TwilioServer
	retryBase time.Duration
	attempts  int
	// otpAttempts is the code sends' retry budget (default 3).
	otpAttempts int
	lease       time.Duration
	ackWait     time.Duration
	// mailer replaces the SMTP client (to simulate a hang mid-send).
	mailer delivery.MailSender
	// ownConn gives the notifier its own NATS connection, so a test can
	// kill it like a crashed process (see the returned stop's sibling).
	ownConn bool
	killed  *func()
	// smsRegions is the notifier's SMS_REGIONS.
	smsRegions []string
}

// startNotifier runs the notifier's two consumers in-process against the
// stack's Postgres and NATS, sending through real SMTP and Twilio clients
// to the loopback test servers. It returns a stop function.
func startNotifier(t *testing.T, st *testkit.Stack, o notifierOpts) (stop func()) {
	t.Helper()
	if o.retryBase == 0 {
		o.retryBase = 50 * time.Millisecond
	}
	if o.attempts == 0 {
		o.attempts = 10
	}
	if o.lease == 0 {
		o.lease = 30 * time.Second
	}
	if o.otpAttempts == 0 {
		o.otpAttempts = 3
	}
	var mailer delivery.MailSender = mail.NewFileSink(t.TempDir(), "x <x@example.com>")
	if o.smtp != nil {
		m, err := mail.NewSMTP(o.smtp.URL(), "Sharelinks <no-reply@share.example.com>", mail.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		mailer = m
	}
	if o.mailer != nil {
		mailer = o.mailer
	}
	js := st.JS
	if o.ownConn {
		nc, err := events.Connect(st.NATSURL, "test-notifier", quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if js, err = jetstream.New(nc); err != nil {
			t.Fatal(err)
		}
		*o.killed = nc.Close
	}
	var texter delivery.SMSSender = sms.NewLogSink(t.TempDir(), quiet)
	if o.twilio != nil {
		tw, err := sms.NewTwilio(sms.TwilioConfig{AccountSID: o.twilio.SID(), AuthToken: o.twilio.Token(),
			From: "+15005550006", APIURL: o.twilio.URL()})
		if err != nil {
			t.Fatal(err)
		}
		texter = tw
	}
	reg := prometheus.NewRegistry()
	w := delivery.New(postgres.NewStore(st.Pool, st.Relay.Wake), st.Keys, mailer, mail.IsTemporary, texter, sms.IsTemporary,
		delivery.Config{
			PublicBaseURL: "https://share.example.com",
			Brand:         compose.Brand{Name: "Sharelinks"},
			Notify:        delivery.Retry{Base: o.retryBase, Max: 10 * o.retryBase, Attempts: o.attempts},
			OTP:           delivery.Retry{Base: o.retryBase, Max: 10 * o.retryBase, Attempts: o.otpAttempts},
			Lease:         o.lease,
			SMSRegions:    o.smsRegions,
		}, quiet, delivery.NewMetrics(reg))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	cm := events.NewConsumerMetrics(reg)
	for _, c := range []struct {
		spec events.ConsumerSpec
		h    events.Handler
		dead func(context.Context, events.Event, string) error
	}{
		{events.ConsumerSpec{Name: "notifier", Types: []string{events.NotificationRequested}, MaxDeliver: o.attempts + 5, AckWait: o.ackWait}, w.HandleNotification, w.DeadNotification},
		{events.ConsumerSpec{Name: "otp", Types: []string{events.OTPRequested}, MaxDeliver: o.otpAttempts + 5, AckWait: o.ackWait}, w.HandleOTP, w.DeadOTP},
	} {
		cons, err := events.EnsureConsumer(ctx, js, c.spec)
		if err != nil {
			t.Fatal(err)
		}
		wk := &events.Worker{Name: c.spec.Name, Consumer: cons, JS: js, Handler: c.h, OnDeadLetter: c.dead,
			Concurrency: 4, MaxDeliver: c.spec.MaxDeliver, Log: quiet, Metrics: cm, Unavailable: postgres.Unavailable}
		wg.Add(1)
		go func() { defer wg.Done(); _ = wk.Run(ctx) }()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func future() string { return time.Now().Add(72 * time.Hour).UTC().Format(time.RFC3339) }

type created struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

func (c created) path() string {
	u, _ := url.Parse(c.URL)
	return u.Path
}

func createLink(t *testing.T, st *testkit.Stack, key string, auth map[string]any, notify bool) created {
	t.Helper()
	s := map[string]any{
		"targets":    []any{map[string]any{"id": "plan.pdf", "type": "file", "url": "https://storage.example.com/plan.pdf"}},
		"link_type":  "download",
		"expires_at": future(),
		"title":      "Quarterly <plan>",
		"message":    "Hi & welcome",
		"notify":     notify,
	}
	if auth != nil {
		s["authenticators"] = []any{auth}
	}
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{s}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var out struct{ Links []created }
	r.JSON(t, &out)
	return out.Links[0]
}

type notificationView struct {
	ID         string  `json:"id"`
	Status     string  `json:"status"`
	Attempts   int     `json:"attempts"`
	LastError  *string `json:"last_error"`
	ProviderID *string `json:"provider_id"`
	SentAt     *string `json:"sent_at"`
}

func notifications(t *testing.T, st *testkit.Stack, key, linkID string) []notificationView {
	t.Helper()
	var out struct{ Notifications []notificationView }
	st.Do(t, "GET", "/v1/links/"+linkID+"/notifications", key, nil).JSON(t, &out)
	return out.Notifications
}

func waitStatus(t *testing.T, st *testkit.Stack, key, linkID, status string) notificationView {
	t.Helper()
	var n notificationView
	testkit.Eventually(t, 15*time.Second, func() bool {
		ns := notifications(t, st, key, linkID)
		if len(ns) != 1 {
			return false
		}
		n = ns[0]
		return n.Status == status
	}, "notification of %s reaches %s", linkID, status)
	return n
}

func emailOTP(addr string) map[string]any {
	return map[string]any{"auth_type": "email_otp", "auth_context": addr}
}

func smsOTP(phone string) map[string]any {
	return map[string]any{"auth_type": "sms_otp", "auth_context": phone}
}

func TestNotificationEmailSent(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "Acme Legal")
	srv := testkit.StartSMTP(t)
	startNotifier(t, st, notifierOpts{smtp: srv})
	l := createLink(t, st, key, emailOTP("ann@example.com"), true)
	msgs := srv.WaitMessages(t, 1, 10*time.Second)
	m := msgs[0]
	n := waitStatus(t, st, key, l.ID, "sent")
	if n.Attempts != 1 || n.ProviderID == nil || n.SentAt == nil {
		t.Fatalf("notification %+v", n)
	}
	if m.To[0] != "ann@example.com" || m.Subject != "Quarterly <plan>" {
		t.Fatalf("to %v subject %q", m.To, m.Subject)
	}
	if want := "<notification-" + n.ID + "@share.example.com>"; m.MessageID != want {
		t.Fatalf("Message-ID %q, want %q", m.MessageID, want)
	}
	token := l.path()[len("/s/"):]
	for part, body := range map[string]string{"text": m.Text, "html": m.HTML} {
		if !strings.Contains(body, "https://share.example.com/s/"+token) {
			t.Errorf("%s part lacks the link URL", part)
		}
		if !strings.Contains(body, "code") {
			t.Errorf("%s part does not say a code will be sent", part)
		}
	}
	if strings.Contains(m.HTML, "<plan>") || !strings.Contains(m.HTML, "&lt;plan&gt;") {
		t.Errorf("owner text not escaped in HTML")
	}
	if !strings.Contains(m.Header.Get("From"), "no-reply@share.example.com") {
		t.Errorf("From %q", m.Header.Get("From"))
	}
	// A redelivered event for a sent notification sends nothing.
	if _, err := st.Pool.Exec(context.Background(), `INSERT INTO outbox (id, subject, payload)
		SELECT sharelinks_uuid_v7(), subject, payload FROM outbox WHERE subject = 'sharelinks.events.notification.requested'`); err != nil {
		t.Fatal(err)
	}
	st.Relay.Wake()
	time.Sleep(500 * time.Millisecond) // give a wrong second send the chance to happen
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("%d mails after a duplicate event, want 1", got)
	}
	st.ValidateEvents(t)
}

func TestNotificationTemporaryFailuresRetryThenSucceed(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	srv.FailNext(2, 451, "4.3.0 try again later")
	startNotifier(t, st, notifierOpts{smtp: srv})
	l := createLink(t, st, key, emailOTP("bo@example.com"), true)
	n := waitStatus(t, st, key, l.ID, "sent")
	if n.Attempts != 3 {
		t.Fatalf("attempts %d, want 3", n.Attempts)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("%d mails, want 1", got)
	}
}

func TestNotificationPermanentFailureFailsAtOnce(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	srv.FailNext(1, 550, "5.1.1 no such user")
	startNotifier(t, st, notifierOpts{smtp: srv})
	l := createLink(t, st, key, emailOTP("nobody@example.com"), true)
	n := waitStatus(t, st, key, l.ID, "failed")
	if n.Attempts != 1 || n.LastError == nil || !strings.Contains(*n.LastError, "550") {
		t.Fatalf("notification %+v", n)
	}
	time.Sleep(300 * time.Millisecond)
	if a := srv.Attempts(); a != 1 {
		t.Fatalf("%d SMTP attempts after a 5xx, want 1", a)
	}
	st.ValidateEvents(t)
}

func TestNotificationServerDownThenUp(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	srv.Stop()
	startNotifier(t, st, notifierOpts{smtp: srv})
	l := createLink(t, st, key, emailOTP("cy@example.com"), true)
	testkit.Eventually(t, 10*time.Second, func() bool {
		ns := notifications(t, st, key, l.ID)
		return len(ns) == 1 && ns[0].Attempts >= 2 && ns[0].Status == "queued" && ns[0].LastError != nil
	}, "retrying while the server is down")
	srv.Restart()
	n := waitStatus(t, st, key, l.ID, "sent")
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("%d mails, want 1 (attempts %d)", got, n.Attempts)
	}
}

var codeRe = regexp.MustCompile(`\b(\d{6})\b`)

func TestEndToEndEmailOTP(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	startNotifier(t, st, notifierOpts{smtp: srv})
	l := createLink(t, st, key, emailOTP("dee@example.com"), true)
	srv.WaitMessages(t, 1, 10*time.Second)

	r := st.Do(t, "POST", l.path()+"/otp", "", nil)
	if r.Status != 202 || !strings.Contains(string(r.Body), `"sent_to":"d***@example.com"`) {
		t.Fatalf("otp: %d %s", r.Status, r.Body)
	}
	msgs := srv.WaitMessages(t, 2, 10*time.Second)
	code := codeRe.FindStringSubmatch(msgs[1].Text)
	if code == nil || !strings.Contains(msgs[1].HTML, code[1]) {
		t.Fatalf("no code in the code mail: %q", msgs[1].Text)
	}
	// A second request within 30 s is throttled.
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second otp: %d %v", r.Status, r.Header)
	}
	wrong := fmt.Sprintf("%06d", (atoi(code[1])+1)%1000000)
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrong}); r.Status != 401 || !strings.Contains(string(r.Body), "4 attempts left") {
		t.Fatalf("wrong code: %d %s", r.Status, r.Body)
	}
	v := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code[1]})
	if v.Status != 200 {
		t.Fatalf("verify: %d %s", v.Status, v.Body)
	}
	var acc struct {
		AccessToken string `json:"access_token"`
	}
	v.JSON(t, &acc)
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code[1]}); r.Status != 401 {
		t.Fatalf("code reused: %d %s", r.Status, r.Body)
	}
	open := st.Do(t, "GET", l.path()+"/open", acc.AccessToken, nil)
	if open.Status != http.StatusFound || !strings.HasPrefix(open.Header.Get("Location"), "https://storage.example.com/plan.pdf?grant=") {
		t.Fatalf("open: %d %s", open.Status, open.Header.Get("Location"))
	}
	// The code is stored only as a keyed hash.
	var plain int
	if err := st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM otp_challenges WHERE position($1::bytea in code_hash) > 0`, []byte(code[1])).Scan(&plain); err != nil {
		t.Fatal(err)
	}
	if plain != 0 {
		t.Fatal("code stored in clear")
	}
	st.ValidateEvents(t)
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// codeSent starts a stack with a notifier mailing to an SMTP sink, makes
// an email-code link for to, requests its code and returns it as mailed.
func codeSent(t *testing.T, to string) (*testkit.Stack, created, string) {
	t.Helper()
	st, l, code, _ := codeSentBy(t, to)
	return st, l, code
}

// codeSentBy is codeSent with the mail server the codes go to.
func codeSentBy(t *testing.T, to string) (*testkit.Stack, created, string, *testkit.SMTPServer) {
	t.Helper()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	startNotifier(t, st, notifierOpts{smtp: srv})
	l := createLink(t, st, key, emailOTP(to), false)
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatal(r.Status)
	}
	return st, l, codeRe.FindStringSubmatch(srv.WaitMessages(t, 1, 10*time.Second)[0].Text)[1], srv
}

// A code verify whose challenge can take an attempt is one statement: it
// charges the attempt, compares the code with the hash the dispatcher
// stored (bound to the link's token) and, when it is right, uses up the
// challenge, counts the access, opens the session and records
// link.verified. A challenge that cannot take an attempt (out of
// attempts, used) is charged nothing there, and the full path says why.
func TestAttemptCodeChargesComparesAndCountsInOneStatement(t *testing.T) {
	t.Parallel()
	st, l, code := codeSent(t, "fay@example.com")
	ctx := context.Background()
	hash := st.Keys.LookupHash(strings.TrimPrefix(l.path(), "/s/"))
	wrong := wrongCode(code, 0)
	attempt := func(code string) (link.CodeOutcome, *link.Session, error) {
		t.Helper()
		sess := &link.Session{ID: uuid.Must(uuid.NewV7()).String(), TokenHash: st.Keys.LookupHash(secret.NewToken("")),
			ExpiresAt: time.Now().Add(time.Hour)}
		out, err := st.Store.AttemptCode(ctx, link.CodeAttempt{TokenHash: hash, CodeHash: st.Keys.CodeHash(hash, code),
			Blind: secret.NewBlind(), CodeLength: len(code), Session: sess, Actor: events.System})
		return out, sess, err
	}
	state := func() (attempts int, status string, accesses, sessions, verified int) {
		t.Helper()
		if err := st.Pool.QueryRow(ctx, `SELECT c.wrong_codes, c.status, l.access_count,
			(SELECT count(*) FROM access_sessions s WHERE s.link_id = l.id),
			(SELECT count(*) FROM audit_events a WHERE a.link_id = l.id AND a.type = 'link.verified')
			FROM otp_challenges c JOIN links l ON l.id = c.link_id`).Scan(&attempts, &status, &accesses, &sessions, &verified); err != nil {
			t.Fatal(err)
		}
		return
	}

	out, _, err := attempt(wrong)
	if err != nil {
		t.Fatal(err)
	}
	if out.Matched || out.Counted || out.Link.ID != l.ID || out.Challenge.WrongCodes != 1 ||
		!secret.Equal(st.Keys.CodeHash(hash, code), out.Challenge.CodeHash) {
		t.Fatalf("wrong code: %+v; want link %s, 1 attempt, the sent code's hash, nothing counted", out, l.ID)
	}
	if n, status, acc, sess, _ := state(); n != 1 || status == "verified" || acc != 0 || sess != 0 {
		t.Fatalf("after a wrong code: %d attempts, %s, %d accesses, %d sessions", n, status, acc, sess)
	}

	if _, err := st.Pool.Exec(ctx, `UPDATE otp_challenges SET wrong_codes = 5`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := attempt(code); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("out of attempts: %v, want not found", err)
	}
	if n, status, acc, _, _ := state(); n != 5 || status == "verified" || acc != 0 {
		t.Fatalf("out of attempts: %d counted, %s, %d accesses; want 5, not verified, 0", n, status, acc)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.ErrorCode() != "code_locked" {
		t.Fatalf("out of attempts through the API: %d %s", r.Status, r.Body)
	}

	if _, err := st.Pool.Exec(ctx, `UPDATE otp_challenges SET wrong_codes = 0`); err != nil {
		t.Fatal(err)
	}
	out, sess, err := attempt(code)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Matched || !out.Counted || out.Challenge.WrongCodes != 1 || sess.LinkID != l.ID {
		t.Fatalf("right code: %+v, session of %q", out, sess.LinkID)
	}
	if n, status, acc, sessions, verified := state(); n != 1 || status != "verified" || acc != 1 || sessions != 1 || verified != 1 {
		t.Fatalf("after the right code: %d attempts, %s, %d accesses, %d sessions, %d link.verified recorded", n, status, acc, sessions, verified)
	}
	if _, _, err := attempt(code); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("used challenge: %v, want not found", err)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.ErrorCode() != "code_used" {
		t.Fatalf("used code through the API: %d %s", r.Status, r.Body)
	}
	if n, _, acc, _, _ := state(); n != 1 || acc != 1 {
		t.Fatalf("a used challenge was charged or counted: %d attempts, %d accesses", n, acc)
	}
}

// wrongCode is a code other than code (the i-th such).
func wrongCode(code string, i int) string {
	return fmt.Sprintf("%06d", (atoi(code)+1+i)%1000000)
}

// wrongThenRight verifies l with a wrong code (401 invalid_code), then with
// the right one (200).
func wrongThenRight(t *testing.T, st *testkit.Stack, l created, code string) {
	t.Helper()
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrongCode(code, 0)}); r.ErrorCode() != "invalid_code" {
		t.Fatalf("wrong code: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.Status != 200 {
		t.Fatalf("right code: %d %s", r.Status, r.Body)
	}
}

// Every update of a challenge but the one that records it sent is a HOT
// update (no index entry written): no index names a column they change
// (migration 007). Sending sets sent_at, which takes the challenge out of
// the partial index of unsent codes the reaper's re-emit reads
// (migration 018): once per code, never on a verify.
func TestChallengeUpdatesAreHOT(t *testing.T) {
	t.Parallel()
	st, l, code := codeSent(t, "hal@example.com")
	// The mail can arrive before the dispatcher records it sent; a verify
	// in between would use the code up first, and "sent" would update
	// nothing (three updates, not four).
	waitCodeSent(t, st, l.ID)
	wrongThenRight(t, st, l, code)
	// Backends report their table statistics when idle, within 10 s, but
	// one that finds the shared statistics locked (a busy machine) puts
	// its report off for up to 60 s (PGSTAT_MAX_INTERVAL). A backend that
	// exits reports at once: closing the pool's connections (every update
	// above went through it) makes the wait short.
	st.Pool.Reset()
	var upd, hot int
	deadline := time.Now().Add(75 * time.Second)
	for {
		if err := st.Pool.QueryRow(context.Background(), `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
			WHERE relname = 'otp_challenges'`).Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		// Claimed, sent, charged a wrong code, used: four updates.
		if upd >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if upd < 4 || upd-hot != 1 {
		t.Fatalf("challenge updates: %d, of which HOT %d; want at least 4, all but the send HOT", upd, hot)
	}
}

// A code a notifier from before the link-bound hash sent (its hash bound
// to the challenge) still works until it expires, through the API, and a
// wrong code is still wrong against it.
func TestCodeHashedTheEarlierWayStillWorks(t *testing.T) {
	t.Parallel()
	st, l, code := codeSent(t, "gus@example.com")
	ctx := context.Background()
	var chID string
	if err := st.Pool.QueryRow(ctx, `SELECT id::text FROM otp_challenges`).Scan(&chID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE otp_challenges SET code_hash = $1`, st.Keys.OTPHash(chID, code)); err != nil {
		t.Fatal(err)
	}
	wrongThenRight(t, st, l, code)
	var attempts, accesses int
	var status string
	if err := st.Pool.QueryRow(ctx, `SELECT c.wrong_codes, c.status, l.access_count FROM otp_challenges c JOIN links l ON l.id = c.link_id`).
		Scan(&attempts, &status, &accesses); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || status != "verified" || accesses != 1 {
		t.Fatalf("after a wrong and the right code: %d attempts, %s, %d accesses; want 2, verified, 1", attempts, status, accesses)
	}
}

func TestWrongCodesLockTheChallenge(t *testing.T) {
	t.Parallel()
	st, l, code := codeSent(t, "eve@example.com")
	wrong := wrongCode(code, 0)
	var last string
	for range 5 {
		r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrong})
		last = r.ErrorCode()
	}
	if last != "code_locked" {
		t.Fatalf("after 5 wrong codes: %s", last)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.ErrorCode() != "code_locked" {
		t.Fatalf("right code after lock: %d %s", r.Status, r.Body)
	}
	// An expired code says so.
	if _, err := st.Pool.Exec(context.Background(), `UPDATE otp_challenges SET wrong_codes = 0, status = 'sent', expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.ErrorCode() != "code_expired" {
		t.Fatalf("expired code: %d %s", r.Status, r.Body)
	}
}

// A new code starts its own count: each challenge counts its own
// attempts, so a code locked by wrong guesses does not lock the one sent
// after it.
func TestANewCodeStartsItsOwnAttempts(t *testing.T) {
	t.Parallel()
	st, l, first, srv := codeSentBy(t, "ida@example.com")
	waitCodeSent(t, st, l.ID)
	for range 5 {
		st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrongCode(first, 0)})
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": first}); r.ErrorCode() != "code_locked" {
		t.Fatalf("the first code after 5 wrong ones: %d %s", r.Status, r.Body)
	}
	if _, err := st.Pool.Exec(context.Background(), `UPDATE otp_challenges SET created_at = created_at - interval '1 minute'
		WHERE link_id = $1`, l.ID); err != nil { // past the resend wait, without sleeping through it
		t.Fatal(err)
	}
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatalf("a new code: %d %s", r.Status, r.Body)
	}
	second := codeRe.FindStringSubmatch(srv.WaitMessages(t, 2, 10*time.Second)[1].Text)[1]
	waitCodeSent(t, st, l.ID)
	r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrongCode(second, 0)})
	if r.ErrorCode() != "invalid_code" || !strings.Contains(string(r.Body), "4 attempts left") {
		t.Fatalf("a wrong guess at the new code: %d %s; want 4 attempts left", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": second}); r.Status != 200 {
		t.Fatalf("the new code: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": second}); r.Status == 200 {
		t.Fatal("the new code worked twice")
	}
}

// Wrong codes sent all at once cannot outrun the limit: each attempt is
// charged (and committed) before its code is compared, so exactly the
// allowed number is ever compared, however many arrive together.
func TestParallelWrongCodesCannotOutrunTheLimit(t *testing.T) {
	t.Parallel()
	st, l, code := codeSent(t, "mallory@example.com")
	const guesses = 40
	counts := guessAtOnce(t, st, l, code, guesses)
	// Five attempts are compared: four say how many are left, the fifth
	// locks; every other guess is refused before comparing.
	if counts["invalid_code"] != 4 || counts["code_locked"] != guesses-4 {
		t.Fatalf("%d parallel wrong codes: %v", guesses, counts)
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.ErrorCode() != "code_locked" {
		t.Fatalf("right code after the parallel guesses: %d %s", r.Status, r.Body)
	}
	var wrongCodes int
	if err := st.Pool.QueryRow(context.Background(), `SELECT wrong_codes FROM otp_challenges`).Scan(&wrongCodes); err != nil {
		t.Fatal(err)
	}
	if wrongCodes != 5 {
		t.Fatalf("wrong_codes %d, want 5", wrongCodes)
	}
}

// waitCodeSent waits until the dispatcher has recorded the newest code of
// the link sent: the message can arrive before that, and a verify in
// between would find the code still on its way.
func waitCodeSent(t *testing.T, st *testkit.Stack, linkID string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool {
		return st.Count(t, `SELECT count(*) FROM otp_challenges WHERE link_id = $1 AND status = 'sent'
			AND created_at = (SELECT max(created_at) FROM otp_challenges WHERE link_id = $1)`, linkID) == 1
	}, "the newest code of %s recorded sent", linkID)
}

// guessAtOnce sends n different wrong codes for l's code at once and
// counts the answers by error code.
func guessAtOnce(t *testing.T, st *testkit.Stack, l created, code string, n int) map[string]int {
	t.Helper()
	results := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wrong := wrongCode(code, i)
		wg.Go(func() {
			results[i] = st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": wrong}).ErrorCode()
		})
	}
	wg.Wait()
	counts := map[string]int{}
	for _, c := range results {
		counts[c]++
	}
	return counts
}

// The right code sent many times at once opens exactly one session and
// counts exactly one access: the challenge's row lock lets one attempt use
// it up, and the others find it used.
func TestParallelRightCodesCountOnce(t *testing.T) {
	t.Parallel()
	st, l, code := codeSent(t, "ivy@example.com")
	const tries = 20
	statuses := make([]int, tries)
	var wg sync.WaitGroup
	for i := range tries {
		wg.Go(func() {
			statuses[i] = st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}).Status
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 401:
		default:
			t.Fatalf("status %d among the parallel right codes: %v", s, statuses)
		}
	}
	var accesses, sessions int
	if err := st.Pool.QueryRow(context.Background(), `SELECT access_count, (SELECT count(*) FROM access_sessions) FROM links`).
		Scan(&accesses, &sessions); err != nil {
		t.Fatal(err)
	}
	if ok != 1 || accesses != 1 || sessions != 1 {
		t.Fatalf("%d parallel right codes: %d answered 200, %d accesses, %d sessions; want 1 each", tries, ok, accesses, sessions)
	}
}
