package delivery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/reaper"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// A recipient who was sent a link and has not opened it hears about it
// once more before it expires, by the channel the first message took;
// one who opened it, a revoked link, and a link too short-lived for a
// reminder to be worth it get nothing, and nobody is reminded twice.
func TestUnopenedLinksRemindedOnceBeforeTheyExpire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testkit.NewStack(t, "", "", func(c *link.Config) { c.RemindBefore = 24 * time.Hour })
	key := st.OwnerKey(t, "Acme Legal")
	srv := testkit.StartSMTP(t)
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{smtp: srv, twilio: tw})

	unopened := createLink(t, st, key, emailOTP("ann@example.com"), true)
	texted := createLink(t, st, key, smsOTP("+442071838750"), true)
	revoked := createLink(t, st, key, emailOTP("dan@example.com"), true)
	opened := createLink(t, st, key, nil, false)
	send := func(l created, to string) {
		t.Helper()
		if r := st.Do(t, "POST", "/v1/links/send", key, map[string]any{"link_ids": []string{l.ID}, "recipients": []string{to}}); r.Status != 202 {
			t.Fatalf("send: %d %s", r.Status, r.Body)
		}
	}
	send(opened, "bob@example.com")
	twice := createLink(t, st, key, nil, false)
	send(twice, "eve@example.com")
	send(twice, "eve@example.com")
	short := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{map[string]any{
		"targets": []any{map[string]any{"id": "x", "type": "file"}}, "link_type": "view", "notify": true,
		"expires_at":     time.Now().Add(30 * time.Hour).UTC().Format(time.RFC3339),
		"authenticators": []any{emailOTP("sid@example.com")},
	}}})
	if short.Status != 201 {
		t.Fatalf("short-lived link: %d %s", short.Status, short.Body)
	}
	srv.WaitMessages(t, 6, 15*time.Second)
	tw.WaitMessages(t, 1, 15*time.Second)

	// The API says when each recipient would be reminded.
	var list struct {
		Notifications []struct {
			Kind     string     `json:"kind"`
			RemindAt *time.Time `json:"remind_at"`
		} `json:"notifications"`
	}
	st.Do(t, "GET", "/v1/links/"+unopened.ID+"/notifications", key, nil).JSON(t, &list)
	if n := list.Notifications; len(n) != 1 || n[0].Kind != "open" || n[0].RemindAt == nil ||
		n[0].RemindAt.Sub(time.Now().Add(48*time.Hour)).Abs() > time.Minute {
		t.Fatalf("first notification: %+v, want kind open, remind_at in 48 h", n)
	}
	if n := st.Count(t, `SELECT count(*) FROM notifications WHERE recipient = 'sid@example.com' AND remind_at IS NOT NULL`); n != 0 {
		t.Fatal("a link expiring in 30 h was set to be reminded 24 h before: 6 h after the first message")
	}

	if r := st.Do(t, "POST", opened.path()+"/verify", "", map[string]any{}); r.Status != 200 {
		t.Fatalf("open: %d %s", r.Status, r.Body)
	}
	if r := st.Do(t, "DELETE", "/v1/links/"+revoked.ID, key, nil); r.Status != 204 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	// A day before expiry is now.
	if _, err := st.Pool.Exec(ctx, `UPDATE notifications SET remind_at = now() - interval '1 second' WHERE remind_at IS NOT NULL`); err != nil {
		t.Fatal(err)
	}
	m := reaper.NewMetrics(prometheus.NewRegistry())
	rp := reaper.New(postgres.NewStore(st.Pool, st.Relay.Wake), reaper.Config{Batch: 2}, quiet, m)
	rp.RunOnce(ctx)

	mails := srv.WaitMessages(t, 6+2, 15*time.Second)
	texts := tw.WaitMessages(t, 1+1, 15*time.Second)
	time.Sleep(time.Second) // a reminder too many would show up here
	reminded := map[string]int{}
	for _, msg := range srv.Messages()[6:] {
		reminded[msg.To[0]]++
		if !strings.HasPrefix(msg.Subject, "Reminder: ") || !strings.Contains(msg.Text, "you have not opened this yet") {
			t.Errorf("reminder to %s: subject %q\n%s", msg.To[0], msg.Subject, msg.Text)
		}
	}
	if len(mails) != 8 || len(srv.Messages()) != 8 || reminded["ann@example.com"] != 1 || reminded["eve@example.com"] != 1 {
		t.Fatalf("reminder mails: %v, want one each to ann and eve (none to bob, who opened it; dan, revoked; sid, short-lived)", reminded)
	}
	if len(texts) != 2 || len(tw.Messages()) != 2 || !strings.HasPrefix(tw.Messages()[1].Body, "Reminder: ") {
		t.Fatalf("reminder texts: %+v", tw.Messages())
	}
	if got := testutil.ToFloat64(m.Reminded); got != 3 {
		t.Errorf("sharelinks_reaper_reminders_total %v, want 3", got)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		st.Do(t, "GET", "/v1/links/"+texted.ID+"/notifications", key, nil).JSON(t, &list)
		return len(list.Notifications) == 2 && list.Notifications[1].Kind == "reminder"
	}, "the texted link lists its reminder")

	// Nobody is reminded twice: not by another sweep, and not when a
	// reminder falls due again (another reaper, a restore from backup).
	if _, err := st.Pool.Exec(ctx, `UPDATE notifications SET remind_at = now()
		WHERE kind = 'open' AND recipient IN ('ann@example.com', 'eve@example.com', '+442071838750')`); err != nil {
		t.Fatal(err)
	}
	rp.RunOnce(ctx)
	rp.RunOnce(ctx)
	time.Sleep(time.Second)
	if len(srv.Messages()) != 8 || len(tw.Messages()) != 2 || testutil.ToFloat64(m.Reminded) != 3 {
		t.Fatalf("after more sweeps: %d mails, %d texts, %v reminders; want 8, 2, 3",
			len(srv.Messages()), len(tw.Messages()), testutil.ToFloat64(m.Reminded))
	}
	if n := st.Count(t, `SELECT count(*) FROM audit_events WHERE type = 'notification.requested'`); n != 7+3 {
		t.Errorf("%d notification.requested events recorded, want 7 first messages and 3 reminders", n)
	}
	st.ValidateEvents(t)
}

// A link that opens later is announced with its start, and its reminder
// waits for the start: before it, nobody could have opened the link.
func TestRemindersWaitForALinksStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testkit.NewStack(t, "", "", func(c *link.Config) { c.RemindBefore = 24 * time.Hour })
	key := st.OwnerKey(t, "Acme Legal")
	srv := testkit.StartSMTP(t)
	startNotifier(t, st, notifierOpts{smtp: srv})
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{map[string]any{
		"targets": []any{map[string]any{"id": "x", "type": "file"}}, "link_type": "view", "notify": true,
		"expires_at":     time.Now().Add(72 * time.Hour).UTC().Format(time.RFC3339),
		"not_before":     time.Now().Add(50 * time.Hour).UTC().Format(time.RFC3339),
		"authenticators": []any{emailOTP("ann@example.com")},
	}}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var out struct{ Links []struct{ ID string } }
	r.JSON(t, &out)
	first := srv.WaitMessages(t, 1, 15*time.Second)[0]
	if !strings.Contains(first.Text, "It opens in 2 days") {
		t.Fatalf("the Open email does not say when the link opens:\n%s", first.Text)
	}
	// The reminder (24 h before expiry) falls due before the start.
	if _, err := st.Pool.Exec(ctx, `UPDATE notifications SET remind_at = now() - interval '1 second' WHERE remind_at IS NOT NULL`); err != nil {
		t.Fatal(err)
	}
	rp := reaper.New(postgres.NewStore(st.Pool, st.Relay.Wake), reaper.Config{}, quiet, reaper.NewMetrics(prometheus.NewRegistry()))
	rp.RunOnce(ctx)
	time.Sleep(time.Second)
	if n := len(srv.Messages()); n != 1 || st.Count(t, `SELECT count(*) FROM notifications WHERE remind_at IS NOT NULL`) != 1 {
		t.Fatalf("before the start: %d mails, want the Open email only, and the reminder still due", n)
	}
	if r := st.Do(t, "PATCH", "/v1/links/"+out.Links[0].ID, key, map[string]any{"not_before": nil}); r.Status != 200 {
		t.Fatalf("open now: %d %s", r.Status, r.Body)
	}
	rp.RunOnce(ctx)
	if msgs := srv.WaitMessages(t, 2, 15*time.Second); !strings.HasPrefix(msgs[1].Subject, "Reminder: ") {
		t.Fatalf("after the start: %q", msgs[1].Subject)
	}
}
