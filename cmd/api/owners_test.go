package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

// The operator sets an owner's policy with the CLI while the api runs
// (with its API key cache on, as by default): the owner's next request
// runs under it, and GET /v1/policy says so; --clear takes it away.
func TestOwnerPolicyFromTheCLIReachesARunningAPI(t *testing.T) {
	dbURL := testkit.Database(t)
	natsURL, _ := testkit.NATS(t)
	ctx := context.Background()
	db := []string{"--database-url", dbURL}
	cli := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append(args, db...), &out)
		return out.String(), err
	}
	if _, err := cli("migrate"); err != nil {
		t.Fatal(err)
	}
	out, err := cli("keys", "create", "--owner", "acme")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := lines[len(lines)-1]
	base, _ := startServe(t, dbURL, natsURL, "--api-key-cache-ttl", "1h")

	type policy struct {
		MaxExpiry       int64  `json:"max_expiry"`
		DefaultExpiry   *int64 `json:"default_expiry"`
		MaxAccessCount  *int   `json:"max_access_count"`
		ForbidOpenLinks bool   `json:"forbid_open_links"`
		OTPPolicy       struct {
			CodeLength int `json:"code_length"`
		} `json:"otp_policy"`
	}
	get := func() policy {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/v1/policy", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		r, err := http.DefaultClient.Do(req)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("GET /v1/policy: %v %v", r, err)
		}
		defer r.Body.Close()
		var p policy
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := get(); p.MaxExpiry != 365*24*3600 || p.DefaultExpiry != nil || p.MaxAccessCount != nil || p.ForbidOpenLinks || p.OTPPolicy.CodeLength != 6 {
		t.Fatalf("before any policy: %+v", p)
	}

	out, err = cli("owners", "policy", "acme", "--max-expiry", "720h", "--default-expiry", "168h", "--max-access-count", "5",
		"--forbid-open-links", "--otp-code-length", "8")
	if err != nil || !strings.Contains(out, `"max_expiry":2592000`) {
		t.Fatalf("set: %v %s", err, out)
	}
	if shown, err := cli("owners", "policy", "acme"); err != nil || shown != out {
		t.Fatalf("shown %q (%v), want what was set %q", shown, err, out)
	}
	// The key is in the api's cache for an hour; the change still reaches it.
	var p policy
	testkit.Eventually(t, 5*time.Second, func() bool { p = get(); return p.MaxExpiry == 720*3600 }, "the policy reaches the api")
	if p.DefaultExpiry == nil || *p.DefaultExpiry != 168*3600 || p.MaxAccessCount == nil || *p.MaxAccessCount != 5 ||
		!p.ForbidOpenLinks || p.OTPPolicy.CodeLength != 8 {
		t.Fatalf("after the change: %+v", p)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"owners", "policy", "acme", "--max-expiry", "24h", "--default-expiry", "48h"}, "the default expiry (48h0m0s) is past the maximum (24h0m0s)"},
		{[]string{"owners", "policy", "acme", "--otp-code-length", "5"}, "code_length must be 6 to 10 digits"},
		{[]string{"owners", "policy", "nobody", "--max-access-count", "3"}, `no owner named "nobody"`},
		{[]string{"owners"}, "owners needs: policy NAME"},
	} {
		if _, err := cli(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if p := get(); p.MaxExpiry != 720*3600 {
		t.Fatalf("a refused change changed the policy: %+v", p)
	}
	if out, err := cli("owners", "policy", "acme", "--clear"); err != nil || !strings.Contains(out, "policy: {}") {
		t.Fatalf("clear: %v %s", err, out)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { p = get(); return p.MaxExpiry == 365*24*3600 }, "the cleared policy reaches the api")
}

// PASSWORD_MAX_ATTEMPTS and PASSWORD_LOCKOUT reach the service: with 2,
// the third wrong password finds the link locked for the lockout given.
func TestPasswordLockoutSettings(t *testing.T) {
	dbURL := testkit.Database(t)
	natsURL, _ := testkit.NATS(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--database-url", dbURL}, &out); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"keys", "create", "--owner", "acme", "--database-url", dbURL}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	key := lines[len(lines)-1]
	base, _ := startServe(t, dbURL, natsURL, "--password-max-attempts", "2", "--password-lockout", "7m")
	post := func(path, bearer, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := post("/v1/links", key, `{"links":[{"targets":[{"id":"a","type":"file"}],"link_type":"view",
		"expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`",
		"authenticators":[{"auth_type":"password","auth_context":"correct horse"}]}]}`)
	var made struct{ Links []struct{ URL string } }
	if err := json.NewDecoder(r.Body).Decode(&made); err != nil || len(made.Links) != 1 {
		t.Fatalf("create: %d %v", r.StatusCode, err)
	}
	r.Body.Close()
	path := made.Links[0].URL[strings.Index(made.Links[0].URL, "/s/"):]
	var codes []int
	var retry string
	for range 3 {
		r := post(path+"/verify", "", `{"password":"wrong horse"}`)
		r.Body.Close()
		codes = append(codes, r.StatusCode)
		retry = r.Header.Get("Retry-After")
	}
	if codes[0] != 401 || codes[1] != 401 || codes[2] != 429 {
		t.Fatalf("three wrong passwords with a limit of 2: %v", codes)
	}
	if secs, _ := strconv.Atoi(retry); secs < 400 || secs > 420 {
		t.Fatalf("Retry-After %q, want the 7-minute lockout", retry)
	}
}
