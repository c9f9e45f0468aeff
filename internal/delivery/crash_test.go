package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/mail"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/reaper"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// hangingMailer sends the first n messages through next, then hangs in
// Send like a process stuck mid-delivery, until released (and then fails:
// the "dead" process never completes those sends).
type hangingMailer struct {
	next    *mail.SMTP
	mu      sync.Mutex
	n       int
	release chan struct{}
	hung    int
}

func (h *hangingMailer) Send(ctx context.Context, m mail.Message) (string, error) {
	h.mu.Lock()
	if h.n > 0 {
		h.n--
		h.mu.Unlock()
		return h.next.Send(ctx, m)
	}
	h.hung++
	h.mu.Unlock()
	<-h.release
	return "", errors.New("process died")
}

func (h *hangingMailer) hanging() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hung
}

func TestWorkerKilledMidBatchEveryNotificationSentOnce(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	smtpClient := smtpSender(t, srv)
	hang := &hangingMailer{next: smtpClient, n: 5, release: make(chan struct{})}

	var killA func()
	opts := notifierOpts{smtp: srv, mailer: hang, ownConn: true, killed: &killA, lease: 2 * time.Second, ackWait: time.Second}
	startNotifier(t, st, opts)
	// Registered after the notifier's cleanup, so it runs first and lets the
	// dead process's stuck handlers return.
	t.Cleanup(func() { close(hang.release) })
	const total = 20
	for i := range total {
		createLink(t, st, key, emailOTP(fmt.Sprintf("r%02d@example.com", i)), true)
	}
	// Worker A sends 5, then hangs on as many as it has in flight.
	testkit.Eventually(t, 10*time.Second, func() bool { return len(srv.Messages()) == 5 && hang.hanging() > 0 }, "A sent 5 and hangs")
	killA() // the process dies: no acks, no naks for what it held

	var killB func()
	startNotifier(t, st, notifierOpts{smtp: srv, ownConn: true, killed: &killB, lease: 2 * time.Second, ackWait: time.Second})
	msgs := srv.WaitMessages(t, total, 30*time.Second)
	time.Sleep(time.Second) // a duplicate send would show up here
	msgs = srv.Messages()
	per := map[string]int{}
	for _, m := range msgs {
		per[m.To[0]]++
	}
	for i := range total {
		to := fmt.Sprintf("r%02d@example.com", i)
		if per[to] != 1 {
			t.Errorf("%s got %d mails, want 1", to, per[to])
		}
	}
	var sent int
	if err := st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM notifications WHERE status = 'sent'`).Scan(&sent); err != nil || sent != total {
		t.Fatalf("%d sent rows, want %d (%v)", sent, total, err)
	}
}

func TestUnparseableEventIsDeadLetteredAndDoesNotBlock(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	startNotifier(t, st, notifierOpts{smtp: srv})
	ctx := context.Background()
	if _, err := st.JS.PublishMsg(ctx, &nats.Msg{Subject: events.SubjectPrefix + events.NotificationRequested, Data: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	// A notification event pointing at nothing: acked, nothing sent.
	ghost := events.Must(events.NotificationRequested, "01900000-0000-7000-8000-000000000001", "01900000-0000-7000-8000-000000000002",
		events.System, events.NotificationData{NotificationID: "01900000-0000-7000-8000-000000000003", Channel: "email"})
	raw, _ := jsonMarshal(ghost)
	if _, err := st.JS.PublishMsg(ctx, &nats.Msg{Subject: ghost.Subject(), Data: raw}); err != nil {
		t.Fatal(err)
	}
	l := createLink(t, st, key, emailOTP("after@example.com"), true)
	waitStatus(t, st, key, l.ID, "sent")
	dlq, err := st.JS.Stream(ctx, events.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		info, err := dlq.Info(ctx)
		return err == nil && info.State.Msgs == 1
	}, "one dead letter")
	m, err := dlq.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "{not json" || m.Header.Get("Sharelinks-Reason") == "" || m.Subject != events.DLQPrefix+"notifier" {
		t.Fatalf("dead letter %s %q %v", m.Subject, m.Data, m.Header)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// The stream loses what it acknowledged (Jepsen's finding on JetStream;
// here every event is purged after the relay published it and before any
// consumer read it): the reaper re-emits each queued notification from
// Postgres, every recipient still gets exactly one mail, and the owner's
// audit trail lost nothing, because every event was recorded with its
// change rather than from the stream.
func TestStreamLossEveryNotificationStillSentOnceAndAudited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	const total = 12
	ids := make([]string, total)
	for i := range total {
		ids[i] = createLink(t, st, key, emailOTP(fmt.Sprintf("r%02d@example.com", i)), true).ID
	}
	count := func(q string, args ...any) int { return st.Count(t, q, args...) }
	testkit.Eventually(t, 10*time.Second, func() bool { return count(`SELECT count(*) FROM outbox`) == 0 }, "all published")
	stream, err := st.JS.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx); err != nil {
		t.Fatal(err)
	}

	startNotifier(t, st, notifierOpts{smtp: srv})
	time.Sleep(1500 * time.Millisecond) // nothing to consume: the stream is empty
	if got := len(srv.Messages()); got != 0 {
		t.Fatalf("%d mails before the repair: the purge lost nothing", got)
	}
	r := reaper.New(postgres.NewStore(st.Pool, st.Relay.Wake), reaper.Config{FreshStuck: time.Second}, quiet,
		reaper.NewMetrics(prometheus.NewRegistry()))
	r.RunOnce(ctx)
	srv.WaitMessages(t, total, 30*time.Second)
	time.Sleep(time.Second) // a duplicate send would show up here
	per := map[string]int{}
	for _, m := range srv.Messages() {
		per[m.To[0]]++
	}
	for i := range total {
		if to := fmt.Sprintf("r%02d@example.com", i); per[to] != 1 {
			t.Errorf("%s got %d mails, want 1", to, per[to])
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return count(`SELECT count(*) FROM notifications WHERE status = 'sent'`) == total
	}, "every notification sent")
	for _, id := range ids {
		for typ, want := range map[string]int{"link.created": 1, "notification.requested": 2, "notification.sent": 1} {
			// notification.requested twice: the original and the re-emit.
			if got := count(`SELECT count(*) FROM audit_events WHERE link_id = $1 AND type = $2`, id, typ); got != want {
				t.Errorf("link %s: %d %s in the audit trail, want %d", id, got, typ, want)
			}
		}
	}
}

// outageAfterSend sends through next, then, once, takes the database away
// before the handler can record the send, as a failover would; it comes
// back after a moment.
type outageAfterSend struct {
	next  *mail.SMTP
	t     *testing.T
	cfg   *pgx.ConnConfig
	once  sync.Once
	back  chan struct{}
	hitAt time.Time
}

func (o *outageAfterSend) Send(ctx context.Context, m mail.Message) (string, error) {
	id, err := o.next.Send(ctx, m)
	if err != nil {
		return id, err
	}
	o.once.Do(func() {
		reopen := testkit.DatabaseOutage(o.t, o.cfg)
		go func() {
			time.Sleep(1500 * time.Millisecond)
			reopen()
			close(o.back)
		}()
	})
	return id, nil
}

// The provider accepted a message and the database went away before the
// notifier could record it: the held event records the send when the
// database is back, and sends nothing again. For a code that matters
// twice over: a second send would mail a second code and make the first,
// the one the recipient is typing, useless.
func TestDatabaseOutageAfterTheSendSendsNothingTwice(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"notification", "code"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			st := testkit.NewStack(t, "", "")
			st.Validate = false // the outage's 503s are checked elsewhere
			key := st.OwnerKey(t, "o")
			srv := testkit.StartSMTP(t)
			smtpClient := smtpSender(t, srv)
			out := &outageAfterSend{next: smtpClient, t: t, cfg: st.Pool.Config().ConnConfig, back: make(chan struct{})}
			// A lease shorter than the outage: the old way, the re-run found
			// its own claim, waited it out and sent again.
			startNotifier(t, st, notifierOpts{smtp: srv, mailer: out, lease: time.Second, ackWait: 2 * time.Second})
			l := createLink(t, st, key, emailOTP("gus@example.com"), kind == "notification")
			if kind == "code" {
				if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
					t.Fatalf("otp: %d %s", r.Status, r.Body)
				}
			}
			srv.WaitMessages(t, 1, 10*time.Second)
			<-out.back
			table, status := "notifications", "sent"
			if kind == "code" {
				table = "otp_challenges"
			}
			testkit.Eventually(t, 10*time.Second, func() bool {
				var n int
				err := st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table+` WHERE status = $1`, status).Scan(&n)
				return err == nil && n == 1
			}, "the send recorded after the outage")
			time.Sleep(3 * time.Second) // past the lease and a redelivery: a second send would land here
			msgs := srv.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d mails, want 1", len(msgs))
			}
			if kind == "code" {
				code := codeRe.FindStringSubmatch(msgs[0].Text)
				if code == nil {
					t.Fatalf("no code in %q", msgs[0].Text)
				}
				if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code[1]}); r.Status != 200 {
					t.Fatalf("the code mailed does not verify: %d %s", r.Status, r.Body)
				}
			}
			var sent int
			if err := st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_events WHERE link_id = $1 AND type = ANY($2)`,
				l.ID, []string{events.NotificationSent, events.OTPSent}).Scan(&sent); err != nil || sent != 1 {
				t.Fatalf("%d sent events in the audit trail, want 1 (%v)", sent, err)
			}
		})
	}
}

// smtpSender is a go-mail client of srv, closed when the test ends, for
// tests that wrap the mailer the notifier sends with.
func smtpSender(t *testing.T, srv *testkit.SMTPServer) *mail.SMTP {
	t.Helper()
	c, err := mail.NewSMTP(srv.URL(), "S <s@share.example.com>", mail.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A notification whose first send failed waits for its retry's event; when
// the stream loses that event, the reaper writes it again soon after the
// retry was due, not only once the row has sat untouched for longer than
// any retry delay (75 minutes by default). Found by the combined-faults
// test: a text whose retry was purged with the stream was still queued a
// minute after the load stopped.
func TestLostRetryIsRepairedSoonAfterItWasDue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	srv.FailNext(1, 451, "4.3.0 try again later")
	stop := startNotifier(t, st, notifierOpts{smtp: srv, retryBase: time.Second})
	l := createLink(t, st, key, emailOTP("ann@example.com"), true)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return st.Count(t, `SELECT count(*) FROM notifications WHERE attempts = 1 AND retry_at IS NOT NULL AND claimed_until IS NULL`) == 1
	}, "the first attempt failed and its retry is scheduled")
	// The notifier goes, and the stream loses the retry with it.
	stop()
	stream, err := st.JS.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	startNotifier(t, st, notifierOpts{smtp: srv, retryBase: time.Second})
	rp := reaper.New(postgres.NewStore(st.Pool, st.Relay.Wake), reaper.Config{FreshStuck: time.Second}, quiet,
		reaper.NewMetrics(prometheus.NewRegistry()))
	time.Sleep(500 * time.Millisecond)
	rp.RunOnce(ctx) // the retry is not overdue yet: nothing to repair
	if n := st.Count(t, `SELECT count(*) FROM audit_events WHERE type = 'notification.requested'`); n != 1 {
		t.Fatalf("%d notification.requested events before the retry was overdue, want 1", n)
	}
	time.Sleep(2 * time.Second) // now it is: due after 1 s, overdue 1 s later
	rp.RunOnce(ctx)
	srv.WaitMessages(t, 1, 10*time.Second)
	waitStatus(t, st, key, l.ID, "sent")
	time.Sleep(500 * time.Millisecond)
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d mails, want 1", n)
	}
}
