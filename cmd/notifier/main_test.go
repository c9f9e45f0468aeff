package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

// A notifier stopped (SIGTERM: its context ends) while mails are going out
// finishes or hands back what it holds; after a restart every notification
// is sent exactly once.
func TestGracefulShutdownMidSendLosesAndDuplicatesNothing(t *testing.T) {
	st := testkit.NewStack(t, "", "")
	key := st.OwnerKey(t, "o")
	srv := testkit.StartSMTP(t)
	dbURL := st.Pool.Config().ConnString()
	args := []string{
		"--database-url", dbURL, "--nats-url", st.NATSURL, "--sharelinks-secret", testkit.TestSecret,
		"--public-base-url", "https://share.example.com", "--metrics-addr", "127.0.0.1:0",
		"--smtp-url", srv.URL(), "--notify-retry-base", "100ms", "--log-format", "text", "--log-level", "error",
	}
	start := func() (stop func() error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, args) }()
		return func() error { cancel(); return <-done }
	}
	stop := start()
	const total = 100
	specs := make([]any, total)
	for i := range specs {
		specs[i] = map[string]any{
			"targets":        []any{map[string]any{"id": "f", "type": "file"}},
			"link_type":      "view",
			"expires_at":     time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"authenticators": []any{map[string]any{"auth_type": "email_otp", "auth_context": fmt.Sprintf("r%03d@example.com", i)}},
			"notify":         true,
		}
	}
	if r := st.Do(t, "POST", "/v1/links", key, map[string]any{"links": specs}); r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return len(srv.Messages()) >= 10 }, "sending started")
	if err := stop(); err != nil { // SIGTERM mid-batch
		t.Fatalf("notifier exit: %v", err)
	}
	sentBefore := len(srv.Messages())
	var queuedClaimed int
	if err := st.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM notifications WHERE status = 'queued' AND claimed_until > now()`).Scan(&queuedClaimed); err != nil {
		t.Fatal(err)
	}
	if queuedClaimed != 0 {
		t.Errorf("%d notifications left claimed by a process that shut down cleanly", queuedClaimed)
	}
	stop = start()
	defer func() { _ = stop() }()
	srv.WaitMessages(t, total, 60*time.Second)
	time.Sleep(500 * time.Millisecond)
	per := map[string]int{}
	for _, m := range srv.Messages() {
		per[m.To[0]]++
	}
	for i := range total {
		if n := per[fmt.Sprintf("r%03d@example.com", i)]; n != 1 {
			t.Errorf("r%03d got %d mails", i, n)
		}
	}
	t.Logf("%d sent before the stop, %d after the restart", sentBefore, total-sentBefore)
}
