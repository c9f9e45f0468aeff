package testkit

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func twilioPost(t *testing.T, s *TwilioServer, user, pass string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/2010-04-01/Accounts/"+user+"/Messages.json", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("response is not JSON: %v", err)
	}
	return resp.StatusCode, body
}

func TestTwilioServerCreatesMessage(t *testing.T) {
	t.Parallel()
	s := StartTwilio(t)
	if !strings.HasPrefix(s.SID(), "AC") || len(s.SID()) != 34 || len(s.Token()) != 32 {
		t.Errorf("sid %q token %q", s.SID(), s.Token())
	}
	status, body := twilioPost(t, s, s.SID(), s.Token(), url.Values{"To": {"+447700900123"}, "From": {"+15005550006"}, "Body": {"hi"}})
	if status != http.StatusCreated {
		t.Fatalf("status %d: %v", status, body)
	}
	sid, _ := body["sid"].(string)
	if !strings.HasPrefix(sid, "SM") || len(sid) != 34 || body["status"] != "queued" || body["to"] != "+447700900123" || body["body"] != "hi" {
		t.Errorf("body = %v", body)
	}
	m := s.WaitMessages(t, 1, time.Second)[0]
	if m.SID != sid || m.From != "+15005550006" || m.Body != "hi" {
		t.Errorf("recorded %+v", m)
	}
}

func TestTwilioServerErrors(t *testing.T) {
	t.Parallel()
	s := StartTwilio(t)
	ok := url.Values{"To": {"+447700900123"}, "From": {"+15005550006"}, "Body": {"hi"}}
	cases := []struct {
		name         string
		user, pass   string
		form         url.Values
		status, code int
	}{
		{"bad token", s.SID(), "nope", ok, 401, 20003},
		{"no to", s.SID(), s.Token(), url.Values{"From": {"+1"}, "Body": {"x"}}, 400, 21604},
		{"no from", s.SID(), s.Token(), url.Values{"To": {"+447700900123"}, "Body": {"x"}}, 400, 21603},
		{"no body", s.SID(), s.Token(), url.Values{"To": {"+447700900123"}, "From": {"+1"}}, 400, 21602},
		{"bad number", s.SID(), s.Token(), url.Values{"To": {"12"}, "From": {"+1"}, "Body": {"x"}}, 400, 21211},
	}
	for _, c := range cases {
		status, body := twilioPost(t, s, c.user, c.pass, c.form)
		if status != c.status || body["code"] != float64(c.code) || body["status"] != float64(c.status) || body["message"] == "" {
			t.Errorf("%s: %d %v, want %d/%d", c.name, status, body, c.status, c.code)
		}
	}

	s.FailNext(2, 429, 20429, "Too Many Requests")
	for range 2 {
		if status, body := twilioPost(t, s, s.SID(), s.Token(), ok); status != 429 || body["code"] != float64(20429) {
			t.Errorf("scripted: %d %v", status, body)
		}
	}
	if status, _ := twilioPost(t, s, s.SID(), s.Token(), ok); status != http.StatusCreated {
		t.Errorf("after scripted failures: %d", status)
	}
	// 4 validation failures + 2 scripted + 1 success; the bad-auth call is
	// not an attempt.
	if n := s.Attempts(); n != 7 {
		t.Errorf("attempts = %d, want 7", n)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("messages = %d, want 1", n)
	}
}

func TestTwilioServerStopRestart(t *testing.T) {
	t.Parallel()
	s := StartTwilio(t)
	url0 := s.URL()
	s.Stop()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{}}
	if _, err := client.Get(url0); err == nil {
		t.Fatal("stopped server answered")
	}
	s.Restart()
	if s.URL() != url0 {
		t.Errorf("URL changed: %s -> %s", url0, s.URL())
	}
	status, _ := twilioPost(t, s, s.SID(), s.Token(), url.Values{"To": {"+447700900123"}, "From": {"+1"}, "Body": {"x"}})
	if status != http.StatusCreated {
		t.Errorf("after restart: %d", status)
	}
}
