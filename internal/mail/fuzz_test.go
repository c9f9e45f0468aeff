package mail_test

import (
	"context"
	"mime"
	netmail "net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/mail"
)

// `make test` runs the seeds; `make fuzz` fuzzes them.

// Whatever an owner puts in its name, a link's title or its note, the
// notification composed from them is written as a mail with exactly its
// own headers: one recipient, the subject compose made, no header the
// owner's text smuggled in (CWE-93).
func FuzzNotificationHeaders(f *testing.F) {
	for _, s := range [][3]string{
		{"Acme Legal", "Q3 numbers", "Hi,\nhere they are."},
		{"Eve\r\nBcc: victim@example.com", "T\nCc: x@y.z", "M"},
		{"=?utf-8?q?Bcc=3A_x=40y=2Ez?=", "Ünïcödé ✓ title", "line\r\n.\r\nQUIT"},
		{"", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	allowed := []string{"Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "From", "Message-Id", "Mime-Version",
		"Subject", "To", "User-Agent", "X-Mailer"}
	f.Fuzz(func(t *testing.T, sender, title, message string) {
		subject, text, html, err := compose.Notification(compose.NotificationData{SenderName: sender, Title: title, Message: message,
			URL: "https://share.example.com/s/tok", AuthType: compose.AuthNone})
		if err != nil {
			return // refused input, refused whole
		}
		dir := t.TempDir()
		_, err = mail.NewFileSink(dir, "Share <share@share.example.com>").Send(context.Background(),
			mail.Message{To: "bob@example.com", Subject: subject, Text: text, HTML: html, MessageID: "<n-1@share.example.com>"})
		if err != nil {
			t.Fatalf("composed from %q %q %q, the mail is refused: %v", sender, title, message, err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		if len(files) != 1 {
			t.Fatalf("%d files", len(files))
		}
		fh, err := os.Open(files[0])
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		msg, err := netmail.ReadMessage(fh)
		if err != nil {
			t.Fatalf("not an RFC 5322 message: %v", err)
		}
		for name := range msg.Header {
			if !slices.Contains(allowed, name) {
				t.Fatalf("header %s: %q, from %q %q %q", name, msg.Header[name], sender, title, message)
			}
		}
		if to := msg.Header.Get("To"); to != "<bob@example.com>" && to != "bob@example.com" {
			t.Fatalf("To: %q", to)
		}
		got, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if err != nil || strings.Join(strings.Fields(got), " ") != strings.Join(strings.Fields(subject), " ") {
			t.Fatalf("Subject %q decodes to %q (%v), composed %q", msg.Header.Get("Subject"), got, err, subject)
		}
	})
}
