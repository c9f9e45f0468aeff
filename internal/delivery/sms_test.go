package delivery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

func TestNotificationSMSThroughTwilio(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{twilio: tw})

	ok := createLink(t, st, key, smsOTP("+14155550123"), true)
	msgs := tw.WaitMessages(t, 1, 10*time.Second)
	n := waitStatus(t, st, key, ok.ID, "sent")
	if msgs[0].To != "+14155550123" || !strings.Contains(msgs[0].Body, "https://share.example.com"+ok.path()) {
		t.Fatalf("sms %+v", msgs[0])
	}
	if n.ProviderID == nil || !strings.HasPrefix(*n.ProviderID, "SM") || n.Attempts != 1 {
		t.Fatalf("notification %+v", n)
	}

	tw.FailNext(2, 429, 20429, "Too Many Requests")
	retried := createLink(t, st, key, smsOTP("+14155550124"), true)
	if n := waitStatus(t, st, key, retried.ID, "sent"); n.Attempts != 3 {
		t.Fatalf("after two 429s: attempts %d, want 3", n.Attempts)
	}

	tw.FailNext(1, 500, 20500, "Internal Server Error")
	five := createLink(t, st, key, smsOTP("+14155550125"), true)
	if n := waitStatus(t, st, key, five.ID, "sent"); n.Attempts != 2 {
		t.Fatalf("after a 500: attempts %d, want 2", n.Attempts)
	}

	before := tw.Attempts()
	tw.FailNext(1, 400, 21211, "The 'To' number is not a valid phone number.")
	bad := createLink(t, st, key, smsOTP("+14155550126"), true)
	f := waitStatus(t, st, key, bad.ID, "failed")
	if f.Attempts != 1 || f.LastError == nil || !strings.Contains(*f.LastError, "21211") {
		t.Fatalf("invalid number: %+v", f)
	}
	time.Sleep(300 * time.Millisecond)
	if got := tw.Attempts() - before; got != 1 {
		t.Fatalf("%d Twilio calls for an invalid number, want 1", got)
	}
	if strings.Contains(*f.LastError, "+14155550126") {
		t.Fatalf("last error leaks the number: %s", *f.LastError)
	}

	tw.Stop()
	down := createLink(t, st, key, smsOTP("+14155550127"), true)
	testkit.Eventually(t, 10*time.Second, func() bool {
		ns := notifications(t, st, key, down.ID)
		return len(ns) == 1 && ns[0].Attempts >= 2 && ns[0].Status == "queued"
	}, "retrying while Twilio is down")
	tw.Restart()
	waitStatus(t, st, key, down.ID, "sent")
	st.ValidateEvents(t)
}

func TestSMSCodeIsOriginBound(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{twilio: tw})
	l := createLink(t, st, key, smsOTP("+442071838750"), false)
	r := st.Do(t, "POST", l.path()+"/otp", "", nil)
	if r.Status != 202 || !strings.Contains(string(r.Body), `"sent_to":"+44******8750"`) {
		t.Fatalf("otp: %d %s", r.Status, r.Body)
	}
	m := tw.WaitMessages(t, 1, 10*time.Second)[0]
	lines := strings.Split(strings.TrimSpace(m.Body), "\n")
	last := lines[len(lines)-1]
	code := codeRe.FindString(m.Body)
	if last != "@share.example.com #"+code {
		t.Fatalf("last line %q (code %s)", last, code)
	}
	if v := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); v.Status != 200 {
		t.Fatalf("verify: %d %s", v.Status, v.Body)
	}
}

func TestFailedCodeSendIsReportedToTheNextRequest(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{twilio: tw})
	l := createLink(t, st, key, smsOTP("+14155550199"), false)
	tw.FailNext(1, 400, 21610, "Attempt to send to unsubscribed recipient")
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatalf("otp: %d", r.Status)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		var s string
		_ = st.Pool.QueryRow(context.Background(), `SELECT status FROM otp_challenges`).Scan(&s)
		return s == "failed"
	}, "challenge marked failed")
	r := st.Do(t, "POST", l.path()+"/otp", "", nil)
	if r.Status != 502 || r.ErrorCode() != "otp_send_failed" {
		t.Fatalf("next request: %d %s", r.Status, r.Body)
	}
	if v := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": "123456"}); v.Status != 401 {
		t.Fatalf("verify after failed send: %d %s", v.Status, v.Body)
	}
	st.ValidateEvents(t)
}
