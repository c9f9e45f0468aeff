package delivery_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// A code verify from outside a link's networks is refused before the
// statement that charges and compares it: the right code, sent to the
// recipient, opens nothing from elsewhere and spends none of the
// challenge's attempts; from inside it works.
func TestCodeVerifyOutsideTheLinksNetworks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	startNotifier(t, st, notifierOpts{smtp: srv})
	r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": []any{map[string]any{
		"targets": []any{map[string]any{"id": "x", "type": "file"}}, "link_type": "view", "expires_at": future(),
		"authenticators":   []any{emailOTP("ann@example.com")},
		"allowed_networks": []string{"127.0.0.0/8"},
	}}})
	var out struct{ Links []created }
	r.JSON(t, &out)
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	l := out.Links[0]
	if r := st.Do(t, "POST", l.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatalf("code request from inside: %d %s", r.Status, r.Body)
	}
	code := codeRe.FindStringSubmatch(srv.WaitMessages(t, 1, 10*time.Second)[0].Text)[1]
	waitCodeSent(t, st, l.ID)

	away := netip.MustParseAddr("198.51.100.7")
	token := strings.TrimPrefix(l.path(), "/s/")
	_, err := st.Service.Verify(link.WithClientIP(ctx, away), token, link.VerifyInput{Code: code},
		events.Actor{Type: "recipient", IP: away.String()})
	if apperr.CodeOf(err) != apperr.Forbidden {
		t.Fatalf("the right code from another network: %v", err)
	}
	if n := st.Count(t, `SELECT count(*) FROM otp_challenges WHERE wrong_codes = 0 AND status = 'sent'`); n != 1 {
		t.Fatal("a refused verify charged or used the challenge")
	}
	if r := st.Do(t, "POST", l.path()+"/verify", "", map[string]string{"code": code}); r.Status != 200 {
		t.Fatalf("the right code from inside: %d %s", r.Status, r.Body)
	}
}

// SMS_REGIONS tightened after links were made (an SMS-pumping incident)
// stops the texts already queued: the notifier checks each number again
// before it sends, and fails the notification or the code with the
// reason; numbers still allowed are texted as before.
func TestNotifierChecksSMSRegionsBeforeEachText(t *testing.T) {
	t.Parallel()
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	tw := testkit.StartTwilio(t)
	startNotifier(t, st, notifierOpts{twilio: tw, smsRegions: []string{"GB"}})
	gb := createLink(t, st, key, smsOTP("+442071838750"), true)
	us := createLink(t, st, key, smsOTP("+14155550123"), true)
	tw.WaitMessages(t, 1, 10*time.Second)
	n := waitStatus(t, st, key, us.ID, "failed")
	if n.LastError == nil || !strings.Contains(*n.LastError, "region US") || strings.Contains(*n.LastError, "4155550123") {
		t.Fatalf("refused text: %+v", n)
	}
	waitStatus(t, st, key, gb.ID, "sent")
	if r := st.Do(t, "POST", us.path()+"/otp", "", nil); r.Status != 202 {
		t.Fatalf("code request: %d %s", r.Status, r.Body)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return st.Count(t, `SELECT count(*) FROM otp_challenges WHERE status = 'failed' AND last_error LIKE '%region US%'`) == 1
	}, "the code to the US number fails")
	time.Sleep(300 * time.Millisecond)
	if got := tw.Messages(); len(got) != 1 || got[0].To != "+442071838750" {
		t.Fatalf("texts sent: %+v", got)
	}
}
