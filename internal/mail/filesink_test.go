package mail_test

import (
	"context"
	"errors"
	"io"
	"mime"
	netmail "net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sharelinks/sharelinks/internal/mail"
)

func readEML(t *testing.T, path string) (*netmail.Message, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msg, err := netmail.ReadMessage(f)
	if err != nil {
		t.Fatalf("%s is not an RFC 5322 message: %v", path, err)
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil {
		t.Fatal(err)
	}
	return msg, string(body)
}

func emlFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestFileSinkWritesEML(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "mail")
	sink := mail.NewFileSink(dir, testFrom)
	t.Cleanup(func() { _ = sink.Close() })
	ctx := context.Background()

	m := testMessage(1)
	id, err := sink.Send(ctx, m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if id != "<notif-1@share.example.com>" {
		t.Errorf("provider id = %q", id)
	}
	files := emlFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("files = %v, want 1", files)
	}
	if !strings.HasSuffix(files[0], "_notif-1@share.example.com.eml") {
		t.Errorf("file name = %s", files[0])
	}
	info, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600", perm)
	}
	msg, body := readEML(t, files[0])
	if got := msg.Header.Get("Message-ID"); got != "<notif-1@share.example.com>" {
		t.Errorf("Message-ID = %q", got)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subj != m.Subject {
		t.Errorf("Subject = %q (%v), want %q", subj, err, m.Subject)
	}
	if !strings.Contains(msg.Header.Get("Content-Type"), "multipart/alternative") {
		t.Errorf("Content-Type = %q", msg.Header.Get("Content-Type"))
	}
	if !strings.Contains(body, "text/plain") || !strings.Contains(body, "text/html") {
		t.Errorf("body lacks a part:\n%s", body)
	}

	// Same Message-ID again: the file is rewritten, not duplicated.
	m.Text = "second version"
	if _, err := sink.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	if files2 := emlFiles(t, dir); len(files2) != 1 || files2[0] != files[0] {
		t.Fatalf("after resend files = %v, want %v", files2, files)
	}
	if _, body := readEML(t, files[0]); !strings.Contains(body, "second version") {
		t.Error("resend did not overwrite the file")
	}

	// Another message gets its own file.
	if _, err := sink.Send(ctx, testMessage(2)); err != nil {
		t.Fatal(err)
	}
	if n := len(emlFiles(t, dir)); n != 2 {
		t.Errorf("files = %d, want 2", n)
	}
}

func TestFileSinkRejectsInvalid(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sink := mail.NewFileSink(dir, testFrom)
	m := testMessage(1)
	m.Subject = "x\r\nBcc: eve@example.com"
	if _, err := sink.Send(context.Background(), m); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("err = %v, want ErrInvalidMessage", err)
	}
	if _, err := mail.NewFileSink(dir, "bogus").Send(context.Background(), testMessage(1)); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("bad from: err = %v", err)
	}
	if n := len(emlFiles(t, dir)); n != 0 {
		t.Errorf("files = %d, want 0", n)
	}
}
