package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLocalURLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, api, ready, err string }{
		{addr: ":8080", api: "http://localhost:8080", ready: "http://127.0.0.1:8080/readyz"},
		{addr: "0.0.0.0:9000", api: "http://localhost:9000", ready: "http://127.0.0.1:9000/readyz"},
		{addr: "[::]:9000", api: "http://localhost:9000", ready: "http://127.0.0.1:9000/readyz"},
		{addr: "127.0.0.1:8081", api: "http://127.0.0.1:8081", ready: "http://127.0.0.1:8081/readyz"},
		{addr: "[::1]:8081", api: "http://[::1]:8081", ready: "http://[::1]:8081/readyz"},
		{addr: "8080", err: "not host:port"},
		{addr: ":0", err: "fixed port"},
	} {
		api, ready, err := localURLs(tc.addr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("localURLs(%q) err = %v, want %q", tc.addr, err, tc.err)
			}
			continue
		}
		if err != nil || api != tc.api || ready != tc.ready {
			t.Errorf("localURLs(%q) = %q, %q, %v; want %q, %q", tc.addr, api, ready, err, tc.api, tc.ready)
		}
	}
}

func TestWithEnvReplaces(t *testing.T) {
	t.Parallel()
	got := withEnv([]string{"A=1", "METRICS_ADDR=:1", "B=x=y"}, map[string]string{"METRICS_ADDR": "127.0.0.1:9091", "C": ""})
	slices.Sort(got)
	want := []string{"A=1", "B=x=y", "C=", "METRICS_ADDR=127.0.0.1:9091"}
	if !slices.Equal(got, want) {
		t.Fatalf("withEnv = %v, want %v", got, want)
	}
}

func TestLineWriterPrefixesWholeLines(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	out := &output{w: &buf}
	a, b := out.prefixed("api"), out.prefixed("reaper")
	_, _ = a.Write([]byte("hel"))
	_, _ = b.Write([]byte("one\ntw"))
	_, _ = a.Write([]byte("lo\nworld\npart"))
	_, _ = b.Write([]byte("o\n"))
	a.Flush()
	b.Flush()
	want := "[reaper] one\n[api] hello\n[api] world\n[reaper] two\n[api] part\n"
	if buf.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestKeyListedAndLastLine(t *testing.T) {
	t.Parallel()
	key := "slk_abcdefgh12345678secret"
	for _, tc := range []struct {
		list string
		want bool
	}{
		{"PREFIX        OWNER\nslk_abcdefgh  dev\n", true},
		{"abcdefgh dev active\n", true},
		{"slk_zzzzzzzz dev\n", false},
		{"", false},
		{"PREFIX        OWNER  CREATED               REVOKED\nslk_abcdefgh  dev    2026-11-25T13:51:55Z  -\n", true},
		{"PREFIX        OWNER  CREATED               REVOKED\nslk_abcdefgh  dev    2026-11-25T13:51:55Z  2026-11-26T10:00:00Z\n", false},
	} {
		if got := keyListed(tc.list, key); got != tc.want {
			t.Errorf("keyListed(%q) = %v, want %v", tc.list, got, tc.want)
		}
	}
	if got := lastLine("created key for dev\nslk_x\n\n"); got != "slk_x" {
		t.Errorf("lastLine = %q", got)
	}
}

func TestLoadOrCreateSecret(t *testing.T) {
	// t.Setenv forbids t.Parallel.
	t.Setenv("SHARELINKS_SECRET", "")
	path := filepath.Join(t.TempDir(), "secret")
	s1, err := loadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base64.StdEncoding.DecodeString(s1); err != nil || len(raw) < 32 {
		t.Fatalf("secret %q is not base64 of >= 32 bytes", s1)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, err := loadOrCreateSecret(path)
	if err != nil || s2 != s1 {
		t.Fatalf("second load = %q, %v; want the stored %q", s2, err, s1)
	}

	t.Setenv("SHARELINKS_SECRET", "from-env")
	if s, _ := loadOrCreateSecret(path); s != "from-env" {
		t.Fatalf("env secret ignored: %q", s)
	}

	t.Setenv("SHARELINKS_SECRET", "")
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateSecret(path); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("bad stored secret: err = %v", err)
	}
}

func TestBannerCurlCommand(t *testing.T) {
	t.Parallel()
	s := &stack{data: "/d", apiURL: "http://localhost:8080", mailDir: "/d/mail", smsDir: "/d/sms",
		dbURL: "postgres://u:pw@h/db", natsURL: "nats://127.0.0.1:4"}
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	b := s.banner("slk_key", now)
	if strings.Contains(b, ":pw@") {
		t.Fatal("banner shows the database password")
	}
	m := regexp.MustCompile(`(?m)^curl -sS -X POST http://localhost:8080/v1/links -H "Authorization: Bearer slk_key" -H 'Content-Type: application/json' -d '([^']*)'$`).FindStringSubmatch(b)
	if m == nil {
		t.Fatalf("no runnable curl line in banner:\n%s", b)
	}
	var req struct {
		Links []struct {
			Targets []struct {
				ID, Type, URL string
			}
			LinkType       string    `json:"link_type"`
			ExpiresAt      time.Time `json:"expires_at"`
			Authenticators []struct {
				AuthType    string `json:"auth_type"`
				AuthContext string `json:"auth_context"`
			}
		}
	}
	if err := json.Unmarshal([]byte(m[1]), &req); err != nil {
		t.Fatalf("curl body is not JSON: %v\n%s", err, m[1])
	}
	l := req.Links[0]
	if want := time.Date(2026, 1, 9, 3, 4, 5, 0, time.UTC); !l.ExpiresAt.Equal(want) {
		t.Errorf("expires_at = %s, want %s", l.ExpiresAt, want)
	}
	if l.LinkType != "view" || l.Targets[0].URL != "https://example.com/files/report.pdf" ||
		l.Authenticators[0].AuthType != "password" || l.Authenticators[0].AuthContext != "correct horse battery" {
		t.Errorf("unexpected body %+v", l)
	}
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	got, err := withDatabase("postgres://postgres@127.0.0.1:5/sharelinks?sslmode=disable", "postgres")
	if err != nil || got != "postgres://postgres@127.0.0.1:5/postgres?sslmode=disable" {
		t.Fatalf("withDatabase = %q, %v", got, err)
	}
}
