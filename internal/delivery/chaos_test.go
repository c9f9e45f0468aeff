package delivery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/reaper"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// effect is one thing a recipient must receive: a notification or a code,
// by mail or SMS, to a destination no other effect uses.
type effect struct {
	kind   string // "notify" or "code"
	sms    bool
	dest   string
	linkID string
	acked  bool // the api answered 2xx for every request the effect needed
}

// chaosLog is what the load goroutines record, as Jepsen's history does:
// every destination tried, and which requests the api acknowledged.
type chaosLog struct {
	mu      sync.Mutex
	tried   map[string]*effect
	answers map[int]int // status code → count
	errs    int         // transport errors
}

func (h *chaosLog) add(e *effect) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tried[e.dest] = e
}

func (h *chaosLog) answer(status int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.errs++
		return
	}
	h.answers[status]++
}

// try sends one request without failing the test: under faults, 503s and
// dropped connections are expected answers, recorded in the history.
func try(st *testkit.Stack, method, path, key string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, st.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := st.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// run makes the effect happen through the api: a link (notified, or not
// and then a code asked for), recording each answer.
func (e *effect) run(st *testkit.Stack, key string, h *chaosLog) {
	h.add(e)
	auth := map[string]any{"auth_type": "email_otp", "auth_context": e.dest}
	if e.sms {
		auth = map[string]any{"auth_type": "sms_otp", "auth_context": e.dest}
	}
	spec := map[string]any{
		"targets":        []any{map[string]any{"id": "plan.pdf", "type": "file", "url": "https://storage.example.com/plan.pdf"}},
		"link_type":      "download",
		"expires_at":     future(),
		"notify":         e.kind == "notify",
		"authenticators": []any{auth},
	}
	status, raw, err := try(st, "POST", "/v1/links", key, map[string]any{"links": []any{spec}})
	h.answer(status, err)
	if err != nil || status != http.StatusCreated {
		return
	}
	var out struct{ Links []created }
	if json.Unmarshal(raw, &out) != nil || len(out.Links) != 1 {
		return
	}
	h.mu.Lock()
	e.linkID = out.Links[0].ID
	e.acked = e.kind == "notify"
	h.mu.Unlock()
	if e.kind != "code" {
		return
	}
	status, _, err = try(st, "POST", out.Links[0].path()+"/otp", "", nil)
	h.answer(status, err)
	if err == nil && status == http.StatusAccepted {
		h.mu.Lock()
		e.acked = true
		h.mu.Unlock()
	}
}

// TestCombinedFaultsLoseNothing is the combined-faults run of
// reliability.md §7.2 (F12) with the checker of §7.1: links with
// notifications and code requests, by mail and SMS, arrive steadily while
// notifiers are killed mid-work, NATS restarts, the stream loses what it
// held, the database goes away, and the mail and SMS providers drop and
// refuse. After the faults stop and the system drains, every effect the
// api acknowledged reached its recipient and its terminal state, with its
// audit row; nothing reached anyone who was never asked for; nothing was
// dead-lettered; duplicates are only those a crash between the provider's
// accept and the commit can cause, and are counted. CHAOS_SEED replays a
// run's fault schedule.
func TestCombinedFaultsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("the combined-faults run takes about a minute")
	}
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED: %v", err)
		}
	}
	t.Logf("CHAOS_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	ctx := context.Background()

	dir, port := t.TempDir(), testkit.FreePort(t)
	natsSrv := testkit.NATSAt(t, dir, port)
	st := testkit.NewStack(t, "", natsSrv.ClientURL())
	st.Validate = false
	key := st.OwnerKey(t, "chaos")
	mailSrv := testkit.StartSMTP(t)
	tw := testkit.StartTwilio(t)

	// Two notifiers at a time, each one "process" with its own connection.
	type proc struct{ kill func() }
	killed := 0
	start := func() proc {
		var closeConn func()
		stop := startNotifier(t, st, notifierOpts{smtp: mailSrv, twilio: tw, ownConn: true, killed: &closeConn,
			attempts: 30, otpAttempts: 30, lease: 2 * time.Second, ackWait: 2 * time.Second})
		// A crash: the connection goes first, so nothing in flight is
		// acked or nakked. (Handlers already sending run to their end, as
		// a crashed process's sends the provider already has.)
		return proc{kill: func() { killed++; closeConn(); stop() }}
	}
	procs := []proc{start(), start()}

	rp := reaper.New(postgres.NewStore(st.Pool, st.Relay.Wake), reaper.Config{Interval: 500 * time.Millisecond,
		FreshStuck: 2 * time.Second, CodeStuck: 2 * time.Second, StaleOutbox: 2 * time.Second}, quiet,
		reaper.NewMetrics(prometheus.NewRegistry()))
	rctx, stopReaper := context.WithCancel(ctx)
	reaperDone := make(chan struct{})
	go func() { _ = rp.Run(rctx); close(reaperDone) }()
	t.Cleanup(func() { stopReaper(); <-reaperDone })

	h := &chaosLog{tried: map[string]*effect{}, answers: map[int]int{}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	var next int
	var nextMu sync.Mutex
	for range 3 {
		load.Add(1)
		go func() {
			defer load.Done()
			for loadCtx.Err() == nil {
				nextMu.Lock()
				i := next
				next++
				nextMu.Unlock()
				e := &effect{kind: []string{"notify", "code"}[i%2], sms: i%4 >= 2}
				e.dest = fmt.Sprintf("%s%05d@example.com", e.kind, i)
				if e.sms {
					e.dest = fmt.Sprintf("+1415555%04d", i)
				}
				e.run(st, key, h)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}

	// The nemesis: every kind of fault once, in a random order, then more
	// at random until the time is up; one at a time, each healed before
	// the next, with load running throughout.
	pause := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)))) }
	faults := map[string]func(){
		"kill a notifier": func() {
			i := rng.IntN(len(procs))
			procs[i].kill()
			pause(200*time.Millisecond, time.Second)
			procs[i] = start()
		},
		"restart NATS": func() {
			natsSrv.Shutdown()
			natsSrv.WaitForShutdown()
			pause(300*time.Millisecond, 1500*time.Millisecond)
			natsSrv = testkit.NATSAt(t, dir, port)
		},
		// Jepsen's finding on JetStream: acknowledged messages lost. The
		// notifiers die first so that the stream holds unread events
		// when it loses them; only Postgres still knows of them.
		"lose the stream": func() {
			for _, p := range procs {
				p.kill()
			}
			pause(500*time.Millisecond, 1500*time.Millisecond)
			s, err := st.JS.Stream(ctx, events.Stream)
			if err == nil {
				var info *jetstream.StreamInfo
				if info, err = s.Info(ctx); err == nil {
					t.Logf("the stream loses %d messages", info.State.Msgs)
					err = s.Purge(ctx)
				}
			}
			if err != nil {
				t.Logf("purge: %v", err) // NATS may still be reconnecting: the fault did not land
			}
			for i := range procs {
				procs[i] = start()
			}
		},
		"take the database away": func() {
			reopen := testkit.DatabaseOutage(t, st.Pool.Config().ConnConfig)
			pause(500*time.Millisecond, 2*time.Second)
			reopen()
		},
		"stop the SMTP server": func() {
			mailSrv.Stop()
			pause(300*time.Millisecond, 1500*time.Millisecond)
			mailSrv.Restart()
		},
		"SMTP refuses for a while": func() { mailSrv.FailNext(5, 451, "4.3.0 try again later") },
		"stop the Twilio server": func() {
			tw.Stop()
			pause(300*time.Millisecond, 1500*time.Millisecond)
			tw.Restart()
		},
		"Twilio answers 503": func() { tw.FailNext(4, 503, 20503, "Service Unavailable") },
		"Twilio answers 429": func() { tw.FailNext(4, 429, 20429, "Too Many Requests") },
	}
	names := make([]string, 0, len(faults))
	for n := range faults {
		names = append(names, n)
	}
	// Map order is random, but not from the seed: sort, then shuffle.
	slices.Sort(names)
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	injected := map[string]int{}
	deadline := time.Now().Add(25 * time.Second)
	time.Sleep(time.Second) // some load before the first fault
	for i := 0; i < len(names) || time.Now().Before(deadline); i++ {
		n := names[i%len(names)]
		if i >= len(names) {
			n = names[rng.IntN(len(names))]
		}
		t.Logf("fault: %s", n)
		faults[n]()
		injected[n]++
		pause(500*time.Millisecond, 1500*time.Millisecond)
	}
	time.Sleep(time.Second) // load against a healed system
	stopLoad()
	load.Wait()

	h.mu.Lock()
	effects := make([]*effect, 0, len(h.tried))
	acked := 0
	for _, e := range h.tried {
		effects = append(effects, e)
		if e.acked {
			acked++
		}
	}
	t.Logf("%d effects tried, %d acknowledged; answers %v, %d transport errors; faults %v, %d notifiers killed",
		len(effects), acked, h.answers, h.errs, injected, killed)
	h.mu.Unlock()
	if acked < 100 {
		t.Fatalf("only %d effects acknowledged: the run exercised too little", acked)
	}

	// The final drain: every acknowledged effect terminal, the outbox empty.
	count := func(q string, args ...any) int { return st.Count(t, q, args...) }
	drainStart := time.Now()
	for {
		if count(`SELECT count(*) FROM outbox`) == 0 &&
			count(`SELECT count(*) FROM notifications WHERE status = 'queued'`) == 0 &&
			count(`SELECT count(*) FROM otp_challenges WHERE status = 'pending'`) == 0 {
			t.Logf("drained %.1f s after the load stopped", time.Since(drainStart).Seconds())
			break
		}
		if time.Since(drainStart) > time.Minute {
			// Not fatal: the checker below names what is stuck.
			t.Errorf("not drained a minute after the load stopped")
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a late duplicate would show up here

	received := map[string]int{}
	for _, m := range mailSrv.Messages() {
		for _, to := range m.To {
			received[to]++
		}
	}
	for _, m := range tw.Messages() {
		received[m.To]++
	}
	var lost, unexpected, dupes []string
	for dest, n := range received {
		if _, ok := h.tried[dest]; !ok {
			unexpected = append(unexpected, dest)
		}
		if n > 1 {
			dupes = append(dupes, fmt.Sprintf("%s×%d", dest, n))
		}
	}
	states := map[string]string{}
	rows, err := st.Pool.Query(ctx, `
		SELECT link_id::text, 'notify', status FROM notifications
		UNION ALL
		SELECT link_id::text, 'code', status FROM otp_challenges`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, kind, status string
		if err := rows.Scan(&id, &kind, &status); err != nil {
			t.Fatal(err)
		}
		states[id+kind] = status
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	audited := map[string]int{}
	rows, err = st.Pool.Query(ctx, `SELECT link_id::text || type, count(*) FROM audit_events
		WHERE type IN ('notification.sent', 'otp.sent') GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		audited[k] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var notAudited []string
	for _, e := range effects {
		if !e.acked {
			continue
		}
		if received[e.dest] == 0 || states[e.linkID+e.kind] != "sent" {
			lost = append(lost, fmt.Sprintf("%s %s (link %s, state %q)", e.kind, e.dest, e.linkID, states[e.linkID+e.kind]))
		}
		sent := map[string]string{"notify": events.NotificationSent, "code": events.OTPSent}[e.kind]
		if audited[e.linkID+sent] != 1 {
			notAudited = append(notAudited, fmt.Sprintf("%s: %d %s", e.linkID, audited[e.linkID+sent], sent))
		}
	}
	// A duplicate needs a send the provider accepted whose outcome never
	// reached the notifier or Postgres: a provider dropping the connection
	// after accepting, or a notifier killed at that moment. (The database
	// going away then is not one: the held event records the send.)
	window := injected["stop the SMTP server"] + injected["stop the Twilio server"] + killed
	t.Logf("checker: %d received, lost %d, unexpected %d, duplicates %d (at most %d allowed), not audited %d",
		len(received), len(lost), len(unexpected), len(dupes), window, len(notAudited))
	for name, got := range map[string][]string{"lost": lost, "unexpected": unexpected, "not audited": notAudited} {
		if len(got) > 0 {
			t.Errorf("%s: %d, e.g. %v", name, len(got), got[:min(len(got), 8)])
		}
	}
	if len(dupes) > window {
		t.Errorf("%d duplicate deliveries, more than the %d faults that can cause one: %v", len(dupes), window, dupes[:min(len(dupes), 8)])
	}
	dlq, err := st.JS.Stream(ctx, events.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d events dead-lettered", info.State.Msgs)
	}
}
