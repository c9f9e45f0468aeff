package compose

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)

func baseData() NotificationData {
	return NotificationData{
		SenderName: "Acme Legal",
		Title:      "Q3 contracts",
		Message:    "Hi Bob,\nhere are the files.",
		URL:        "https://share.example.com/l/abc123?t=x&y=1",
		ExpiresAt:  testNow.Add(72 * time.Hour),
		Now:        testNow,
		AuthType:   AuthEmailOTP,
	}
}

func TestHumanize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   time.Duration
		want string
	}{
		{-time.Hour, "less than a minute"},
		{0, "less than a minute"},
		{20 * time.Second, "less than a minute"},
		{40 * time.Second, "1 minute"},
		{10 * time.Minute, "10 minutes"},
		{59*time.Minute + 40*time.Second, "1 hour"},
		{90 * time.Minute, "2 hours"},
		{5 * time.Hour, "5 hours"},
		{36 * time.Hour, "36 hours"},
		{72 * time.Hour, "3 days"},
		{30 * 24 * time.Hour, "30 days"},
	}
	for _, c := range cases {
		if got := Humanize(c.in); got != c.want {
			t.Errorf("Humanize(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestNotificationContent(t *testing.T) {
	t.Parallel()
	subject, text, html, err := Notification(baseData())
	if err != nil {
		t.Fatal(err)
	}
	if subject != "Q3 contracts" {
		t.Errorf("subject = %q", subject)
	}
	wantExpiry := "expires in 3 days, on Wed 2 Dec 2026 14:00 UTC"
	for name, body := range map[string]string{"text": text, "html": html} {
		if !strings.Contains(body, wantExpiry) {
			t.Errorf("%s lacks expiry %q:\n%s", name, wantExpiry, body)
		}
		if !strings.Contains(body, "a one-time code we will send to this address") {
			t.Errorf("%s lacks the email_otp need", name)
		}
		if !strings.Contains(body, "Acme Legal") {
			t.Errorf("%s lacks sender", name)
		}
	}
	if !strings.Contains(text, "Open: https://share.example.com/l/abc123?t=x&y=1") {
		t.Errorf("text lacks URL:\n%s", text)
	}
	if !strings.Contains(text, "> Hi Bob,\n> here are the files.") {
		t.Errorf("text lacks quoted message:\n%s", text)
	}
	// In HTML the & in the URL is escaped as &amp; both in href and in text.
	if !strings.Contains(html, `href="https://share.example.com/l/abc123?t=x&amp;y=1"`) {
		t.Errorf("html lacks link href:\n%s", html)
	}
	if !strings.Contains(html, ">Open</a>") {
		t.Error("html lacks the Open button")
	}
	if !strings.Contains(html, "Hi Bob,<br>here are the files.") {
		t.Errorf("html lacks message lines:\n%s", html)
	}
	if !strings.Contains(html, "background-color:#2563eb") {
		t.Error("html lacks default accent colour")
	}
	if strings.Contains(html, "<img") {
		t.Error("html references an image without a logo")
	}
	if strings.Contains(html, "ZgotmplZ") {
		t.Errorf("html/template refused a value:\n%s", html)
	}
}

func TestNotificationEscapesOwnerText(t *testing.T) {
	t.Parallel()
	d := baseData()
	d.SenderName = `Mallory <script>alert(1)</script>`
	d.Title = "Hello\r\nBcc: victim@example.com <b>bold</b>"
	d.Message = `<script>alert("x")</script><a href="javascript:evil()">click</a>`
	subject, text, html, err := Notification(d)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(subject, "\r\n") {
		t.Errorf("subject keeps line breaks: %q", subject)
	}
	if subject != "Hello Bcc: victim@example.com <b>bold</b>" {
		t.Errorf("subject = %q", subject)
	}
	for _, bad := range []string{"<script>", "<b>bold", `<a href="javascript`} {
		if strings.Contains(html, bad) {
			t.Errorf("html contains unescaped %q", bad)
		}
	}
	if !strings.Contains(html, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("html lacks escaped sender:\n%s", html)
	}
	// Plain text is not markup: the owner text is shown as typed.
	if !strings.Contains(text, `<script>alert("x")</script>`) {
		t.Errorf("text altered owner message:\n%s", text)
	}
}

func TestNotificationDefaultsAndNeeds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		auth string
		need string
	}{
		{AuthNone, ""},
		{AuthPassword, "the password from the sender (they will tell you separately)"},
		{AuthSMSOTP, "a code sent to your phone"},
		{AuthEmailOTP, "a one-time code we will send to this address"},
	}
	for _, c := range cases {
		d := baseData()
		d.Title = ""
		d.Message = ""
		d.ExpiresAt = time.Time{}
		d.AuthType = c.auth
		subject, text, html, err := Notification(d)
		if err != nil {
			t.Fatal(err)
		}
		if subject != "Acme Legal shared something with you" {
			t.Errorf("subject = %q", subject)
		}
		if strings.Contains(text, "expires") || strings.Contains(text, "Message from") {
			t.Errorf("text mentions absent parts:\n%s", text)
		}
		hasNeed := strings.Contains(text, "you will need")
		if hasNeed != (c.need != "") || (c.need != "" && !strings.Contains(text, c.need)) {
			t.Errorf("auth %s: text need wrong:\n%s", c.auth, text)
		}
		if c.need != "" && !strings.Contains(html, c.need) {
			t.Errorf("auth %s: html lacks need", c.auth)
		}
	}
}

func TestNotificationBrand(t *testing.T) {
	t.Parallel()
	d := baseData()
	d.Brand = Brand{Name: "Acme Share", LogoURL: "https://cdn.example.com/logo.png", AccentColor: "#0f766e"}
	_, text, html, err := Notification(d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html, `<img src="https://cdn.example.com/logo.png" alt="Acme Share"`) {
		t.Errorf("html lacks logo:\n%s", html)
	}
	if !strings.Contains(html, "background-color:#0f766e") || !strings.Contains(text, "Sent by Acme Share") {
		t.Error("brand not applied")
	}
}

func TestNotificationRejectsBadInput(t *testing.T) {
	t.Parallel()
	cases := map[string]func(*NotificationData){
		"javascript url": func(d *NotificationData) { d.URL = "javascript:alert(1)" },
		"relative url":   func(d *NotificationData) { d.URL = "/l/abc" },
		"auth type":      func(d *NotificationData) { d.AuthType = "magic" },
		"accent css":     func(d *NotificationData) { d.Brand.AccentColor = "red;background:url(x)" },
		"logo scheme":    func(d *NotificationData) { d.Brand.LogoURL = "data:image/png;base64,AAAA" },
	}
	for name, mutate := range cases {
		d := baseData()
		mutate(&d)
		if _, _, _, err := Notification(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestOTPEmail(t *testing.T) {
	t.Parallel()
	subject, text, html, err := OTPEmail(OTPData{Code: "123456", TTL: 10 * time.Minute, Host: "share.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(subject, "123456") {
		t.Errorf("subject = %q", subject)
	}
	for name, body := range map[string]string{"text": text, "html": html} {
		for _, want := range []string{"123456", "valid for 10 minutes", "If you did not ask for this, ignore this email", "share.example.com"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", name, want)
			}
		}
	}
	if !strings.Contains(html, "font-size:36px") {
		t.Error("code is not shown large")
	}

	if _, _, _, err := OTPEmail(OTPData{Code: "<b>1</b>", TTL: time.Minute}); !errors.Is(err, ErrInvalid) {
		t.Errorf("markup in code: err = %v", err)
	}
	if _, _, _, err := OTPEmail(OTPData{Code: "123456"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero TTL: err = %v", err)
	}
}

func TestNotificationSMS(t *testing.T) {
	t.Parallel()
	d := baseData()
	got := NotificationSMS(d)
	want := "Acme Legal shared \"Q3 contracts\" with you: https://share.example.com/l/abc123?t=x&y=1\nExpires in 3 days."
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	d.Title = strings.Repeat("x", 200)
	d.SenderName = ""
	d.ExpiresAt = time.Time{}
	got = NotificationSMS(d)
	if !strings.HasPrefix(got, "sharelinks shared \""+strings.Repeat("x", 57)+"...\"") || strings.Contains(got, "\n") {
		t.Errorf("long title: %q", got)
	}
}

func TestOTPSMSLastLine(t *testing.T) {
	t.Parallel()
	cases := []struct{ host, wantHost string }{
		{"share.example.com", "share.example.com"},
		{"https://Share.Example.com:8443/x", "share.example.com"},
		{"share.example.com:443", "share.example.com"},
	}
	for _, c := range cases {
		got := OTPSMS("123456", c.host, 10*time.Minute, "")
		want := "Your sharelinks code is 123456. It expires in 10 minutes.\n\n@" + c.wantHost + " #123456"
		if got != want {
			t.Errorf("OTPSMS(host %q) = %q, want %q", c.host, got, want)
		}
		lines := strings.Split(got, "\n")
		if last := lines[len(lines)-1]; last != "@"+c.wantHost+" #123456" {
			t.Errorf("last line = %q", last)
		}
	}
	if got := OTPSMS("9876", "", 5*time.Minute, "Acme"); got != "Your Acme code is 9876. It expires in 5 minutes." {
		t.Errorf("no host: %q", got)
	}
}

func TestReminderSaysItIsOne(t *testing.T) {
	t.Parallel()
	d := baseData()
	d.ExpiresAt = testNow.Add(23 * time.Hour)
	d.Reminder = true
	subject, text, html, err := Notification(d)
	if err != nil {
		t.Fatal(err)
	}
	if subject != "Reminder: Q3 contracts" {
		t.Errorf("subject = %q", subject)
	}
	want := "A reminder: you have not opened this yet, and it expires in 23 hours"
	for name, body := range map[string]string{"text": text, "html": html} {
		if !strings.Contains(body, want) {
			t.Errorf("%s lacks %q:\n%s", name, want, body)
		}
	}
	if sms := NotificationSMS(d); !strings.HasPrefix(sms, "Reminder: Acme Legal shared \"Q3 contracts\"") {
		t.Errorf("sms = %q", sms)
	}
	// The first message says nothing of the kind.
	d.Reminder = false
	subject, text, _, _ = Notification(d)
	if strings.HasPrefix(subject, "Reminder") || strings.Contains(text, "A reminder") {
		t.Errorf("first message reads as a reminder: %q\n%s", subject, text)
	}
}

// A link that opens later says when, in the email (both parts, and the
// preheader an inbox shows) and in the text; one already open says nothing.
func TestNotificationSaysWhenALinkOpens(t *testing.T) {
	t.Parallel()
	d := baseData()
	d.OpensAt = d.Now.Add(49 * time.Hour)
	want := "opens in 2 days, on " + d.OpensAt.UTC().Format("Mon 2 Jan 2006 15:04 MST")
	_, text, html, err := Notification(d)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"text": text, "html": html} {
		if !strings.Contains(body, "It "+want) {
			t.Errorf("%s lacks %q:\n%s", name, want, body)
		}
	}
	if sms := NotificationSMS(d); !strings.Contains(sms, "\nOpens in 2 days.") {
		t.Errorf("sms lacks the start: %q", sms)
	}
	d.OpensAt = d.Now.Add(-time.Hour)
	_, text, _, _ = Notification(d)
	if strings.Contains(text, "opens") || strings.Contains(NotificationSMS(d), "Opens") {
		t.Errorf("a link already open says when it opens:\n%s", text)
	}
}
