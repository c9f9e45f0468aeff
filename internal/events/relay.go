package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// RelayMetrics are the outbox relay's metrics.
type RelayMetrics struct {
	Pending   prometheus.Gauge
	Published *prometheus.CounterVec
	Lag       prometheus.Histogram
	Claimed   prometheus.Histogram
}

// NewRelayMetrics registers the relay metrics on reg.
func NewRelayMetrics(reg prometheus.Registerer) *RelayMetrics {
	m := &RelayMetrics{
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sharelinks_outbox_pending", Help: "Outbox rows not yet published to JetStream.",
		}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sharelinks_outbox_published_total", Help: "Outbox rows published, by result.",
		}, []string{"result"}),
		Lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sharelinks_outbox_publish_lag_seconds",
			Help:    "Time from outbox row commit to JetStream publish ack.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120, 600},
		}),
		Claimed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sharelinks_outbox_claim_rows",
			Help:    "Outbox rows per relay claim that found any: how well a busy relay gathers commits (Spacing).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000},
		}),
	}
	for _, r := range []string{"ok", "error"} { // zeros, so an alert sees the first error
		m.Published.WithLabelValues(r)
	}
	reg.MustRegister(m.Pending, m.Published, m.Lag, m.Claimed)
	return m
}

// Relay publishes outbox rows to JetStream and deletes them once acked.
// It is woken right after a commit (Wake) and also polls, so rows written
// while NATS was down, or by a process that died before publishing, still
// go out. Any number of relays may run: each claims rows with FOR UPDATE
// SKIP LOCKED, and JetStream deduplicates on Nats-Msg-Id (the row id) if a
// row is published twice (acked, then the delete failed).
type Relay struct {
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *RelayMetrics
	// wake is shared by the publish loops: one commit's rows need one loop,
	// and a loop that finds a full batch keeps going on its own.
	wake chan struct{}
	// Batch is the most rows one claim takes.
	Batch int
	// Parallel is how many publish loops run at once (they share the work
	// through SKIP LOCKED); more than one overlaps database and NATS waits.
	Parallel int
	// Poll is the fallback interval when nobody wakes the relay.
	Poll time.Duration
	// AckTimeout bounds the wait for a batch's publish acks.
	AckTimeout time.Duration
	// Spacing is the least time between the starts of one loop's woken
	// flushes. An idle relay publishes the moment it is woken; a busy one
	// (woken by every commit) gathers the rows of several commits into one
	// claim instead of paying a claim transaction for every two or three.
	Spacing time.Duration

	sampled time.Time // last pending-gauge sample (gauge loop only)
}

// NewRelay builds a relay; call Run to start it.
func NewRelay(pool *pgxpool.Pool, js jetstream.JetStream, log *slog.Logger, m *RelayMetrics) *Relay {
	return &Relay{
		pool: pool, js: js, log: log, metrics: m, wake: make(chan struct{}, 1),
		Batch: 1000, Parallel: 2, Poll: time.Second, AckTimeout: 5 * time.Second, Spacing: relaySpacing,
	}
}

// Wake asks the relay to publish now. It never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// relaySpacing was measured with make bench (BENCHMARKS.md, session 5),
// alternating 5 ms and none back to back, 16 clients: create 0.85 and
// 0.97 of its ceiling against 0.71 and 0.76 (api and Postgres CPU per link
// both down by a quarter); verify / open across a million links 0.34 /
// 0.40 and 0.33 / 0.34 against 0.35 / 0.36 and 0.28 / 0.28. An event
// waits at most this much longer, and only while the relay is busy.
const relaySpacing = 5 * time.Millisecond

// recentWindow is how far back a woken flush starts scanning. Ids are
// UUIDv7 (time-ordered), so rows committed in the last moments sort after
// this floor; anything older is found by the full scan of the next poll.
const recentWindow = 10 * time.Second

// Run publishes until ctx ends, then makes one last bounded attempt to
// flush what is pending, so a deploy leaves nothing behind.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range max(r.Parallel, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(ctx, i == 0)
		}()
	}
	wg.Wait()
	fctx, cancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer cancel()
	if _, err := r.Flush(fctx, ""); err != nil {
		r.log.Warn("outbox flush at shutdown incomplete; rows stay for the next relay", "err", err)
	}
	return nil
}

const (
	// shutdownFlush bounds how long publishing may go on after the signal.
	shutdownFlush = 3 * time.Second
	// statementTimeout bounds the relay's claim and delete.
	statementTimeout = 10 * time.Second
)

// loop is one publish loop; the first also keeps the pending gauge.
func (r *Relay) loop(ctx context.Context, gauge bool) {
	t := time.NewTicker(r.Poll)
	defer t.Stop()
	backoff := time.Duration(0)
	var last time.Time // start of this loop's last woken flush
	for {
		from := ""
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			if wait := r.Spacing - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			last = time.Now()
			from = floorID(last.Add(-recentWindow))
		case <-t.C:
			if gauge {
				r.updatePending(ctx)
			}
		}
		if backoff > 0 {
			// NATS was down on the last try: do not hammer it on every wake.
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		if _, err := r.Flush(ctx, from); err != nil {
			if ctx.Err() == nil {
				r.log.Warn("outbox publish failed; will retry", "err", err)
			}
			backoff = min(max(backoff*2, 100*time.Millisecond), 5*time.Second)
			continue
		}
		backoff = 0
	}
}

// floorID is the smallest UUIDv7 of the given time.
func floorID(t time.Time) string {
	var u uuid.UUID
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	return u.String()
}

// Flush publishes batches of rows with ids above from ("" = all) until
// none is left (or one fails).
func (r *Relay) Flush(ctx context.Context, from string) (int, error) {
	if from == "" {
		from = uuid.Nil.String()
	}
	total := 0
	for {
		n, last, err := r.publishBatch(ctx, from)
		total += n
		if err != nil {
			return total, err
		}
		if last == "" {
			return total, nil
		}
		from = last
	}
}

type outboxRow struct {
	id        string
	subject   string
	payload   []byte
	createdAt time.Time
}

// publishBatch claims rows after `after`, publishes them, deletes the acked
// ones, and returns the last id claimed ("" when there were fewer than a
// full batch, i.e. nothing more to scan).
//
// It costs two round trips: BEGIN and the claim go in one pipeline, the
// delete and COMMIT in another. Losing the delete in a crash only means
// publishing again, which JetStream dedups on Nats-Msg-Id, so the
// transaction does not wait for its WAL flush.
func (r *Relay) publishBatch(ctx context.Context, after string) (int, string, error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("outbox connection: %w", err)
	}
	// The claim and the delete run to their end even when ctx ends (only
	// the wait for acks is cut): a statement cancelled mid-way leaves its
	// transaction, and the rows it locked, to end on the server only after
	// the connection is closed, and the shutdown flush, which skips
	// locked rows, would leave those rows behind.
	dbctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statementTimeout)
	defer cancel()
	// A connection given back inside a transaction (any error below) is
	// closed by the pool, which also ends the transaction.
	defer conn.Release()
	claim := &pgx.Batch{}
	claim.Queue(`BEGIN`)
	claim.Queue(`SET LOCAL synchronous_commit = off`)
	claim.Queue(`SELECT id::text, subject, payload, created_at FROM outbox
		WHERE outbox.id > $2::uuid
		ORDER BY outbox.id
		LIMIT $1
		FOR UPDATE SKIP LOCKED`, r.Batch, after)
	var batch []outboxRow
	br := conn.SendBatch(dbctx, claim)
	_, err = br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		var rows pgx.Rows
		rows, err = br.Query()
		if err == nil {
			batch, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
				var o outboxRow
				err := row.Scan(&o.id, &o.subject, &o.payload, &o.createdAt)
				return o, err
			})
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", fmt.Errorf("claim outbox rows: %w", err)
	}
	if len(batch) > 0 {
		r.metrics.Claimed.Observe(float64(len(batch)))
	}
	last := ""
	if len(batch) == r.Batch {
		last = batch[len(batch)-1].id
	}
	ok, pubErr := r.publish(ctx, batch)
	done := &pgx.Batch{}
	if len(ok) > 0 {
		done.Queue(`DELETE FROM outbox WHERE id = ANY($1::text[]::uuid[])`, ok)
	}
	// Commit what was acked even when part of the batch failed: the rest
	// stays for the next attempt.
	done.Queue(`COMMIT`)
	if err := conn.SendBatch(dbctx, done).Close(); err != nil {
		// Rolled back: rows acked by JetStream will be published again and
		// its dedup on Nats-Msg-Id absorbs the duplicates.
		return 0, "", fmt.Errorf("delete published outbox rows: %w", err)
	}
	if pubErr != nil {
		return len(ok), "", pubErr
	}
	return len(ok), last, nil
}

// message is one event to publish, from batch row `row`.
type message struct {
	row     int
	id      string
	subject string
	data    []byte
}

// publishWave bounds the publishes awaiting acks (nats.go stalls past
// 4000 by default).
const publishWave = 1000

// expand turns claimed rows into messages. A row holds one event (a JSON
// object, published with the row's id) or, written by a sweep, a JSON
// array of events of the row's subject, each published on its own with
// its own id. need[i] is row i's message count, or -1 when it cannot be
// read (it stays in the outbox, and the error is returned).
func expand(batch []outboxRow) (msgs []message, need []int, err error) {
	need = make([]int, len(batch))
	for i, o := range batch {
		if len(o.payload) == 0 || o.payload[0] != '[' {
			msgs = append(msgs, message{row: i, id: o.id, subject: o.subject, data: o.payload})
			need[i] = 1
			continue
		}
		if elems, ids, ok := SplitSweep(o.payload); ok {
			for k, el := range elems {
				msgs = append(msgs, message{row: i, id: ids[k], subject: o.subject, data: el})
			}
			need[i] = len(elems)
			continue
		}
		var elems []json.RawMessage
		if uerr := json.Unmarshal(o.payload, &elems); uerr != nil {
			need[i], err = -1, fmt.Errorf("outbox row %s: %w", o.id, uerr)
			continue
		}
		start := len(msgs)
		for _, el := range elems {
			var head struct {
				ID string `json:"id"`
			}
			if uerr := json.Unmarshal(el, &head); uerr != nil || head.ID == "" {
				err = fmt.Errorf("outbox row %s: event without id (%v)", o.id, uerr)
				msgs = msgs[:start]
				need[i] = -1
				break
			}
			msgs = append(msgs, message{row: i, id: head.ID, subject: o.subject, data: el})
			need[i]++
		}
	}
	return msgs, need, err
}

// SplitSweep reads a sweep's outbox payload in the framing the sweeps
// write, "[" + events joined by ",\n" + "]", each event starting with its
// id ({"id":"<uuid>",...), without a JSON parser: for a million expired
// links, encoding/json was a third of the relay's CPU. ok is false for
// anything else, which expand then reads with encoding/json.
func SplitSweep(payload []byte) (elems [][]byte, ids []string, ok bool) {
	n := len(payload)
	if n < 2 || payload[0] != '[' || payload[n-1] != ']' {
		return nil, nil, false
	}
	const head = `{"id":"`
	for _, el := range bytes.Split(payload[1:n-1], []byte(",\n")) {
		// One event per element: an element holding a second event (a
		// payload framed otherwise) goes to the JSON parser.
		if len(el) < len(head)+38 || !bytes.HasPrefix(el, []byte(head)) || el[len(head)+36] != '"' ||
			el[len(el)-1] != '}' || bytes.Contains(el, []byte(`},{"id":"`)) {
			return nil, nil, false
		}
		id := string(el[len(head) : len(head)+36])
		if uuid.Validate(id) != nil {
			return nil, nil, false
		}
		elems, ids = append(elems, el), append(ids, id)
	}
	return elems, ids, true
}

// publish sends a batch's messages asynchronously, in waves, and returns
// the ids of the rows whose every message was acked.
func (r *Relay) publish(ctx context.Context, batch []outboxRow) ([]string, error) {
	// An unreadable row stays behind (and is reported) without holding up
	// the rest of the batch.
	msgs, need, badErr := expand(batch)
	acked := make([]int, len(batch))
	var firstErr error
	for start := 0; start < len(msgs) && firstErr == nil; start += publishWave {
		firstErr = r.publishWave(ctx, batch, msgs[start:min(start+publishWave, len(msgs))], acked)
	}
	if firstErr == nil {
		firstErr = badErr
	}
	ok := make([]string, 0, len(batch))
	for i, o := range batch {
		if need[i] >= 0 && acked[i] == need[i] { // an empty array is done too
			ok = append(ok, o.id)
		}
	}
	return ok, firstErr
}

// publishWave publishes msgs and waits for their acks, counting them per
// row in acked.
func (r *Relay) publishWave(ctx context.Context, batch []outboxRow, msgs []message, acked []int) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var firstErr error
	for _, m := range msgs {
		msg := &nats.Msg{Subject: m.subject, Data: m.data, Header: nats.Header{}}
		f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(m.id))
		if err != nil {
			firstErr = fmt.Errorf("publish %s: %w", m.subject, err)
			break
		}
		futures = append(futures, f)
	}
	timeout := time.NewTimer(r.AckTimeout)
	defer timeout.Stop()
	for i, f := range futures {
		m := msgs[i]
		select {
		case <-f.Ok():
			acked[m.row]++
			r.metrics.Published.WithLabelValues("ok").Inc()
			r.metrics.Lag.Observe(time.Since(batch[m.row].createdAt).Seconds())
		case err := <-f.Err():
			r.metrics.Published.WithLabelValues("error").Inc()
			if firstErr == nil {
				firstErr = fmt.Errorf("publish ack %s: %w", m.subject, err)
			}
		case <-timeout.C:
			r.metrics.Published.WithLabelValues("error").Add(float64(len(futures) - i))
			if firstErr == nil {
				firstErr = errors.New("timed out waiting for publish acks")
			}
			return firstErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return firstErr
}

// updatePending samples the backlog for the gauge at most every 10 s,
// capped at pendingCap rows: an exact count(*) would scan every dead tuple
// a big burst leaves behind, once a second in every process.
func (r *Relay) updatePending(ctx context.Context) {
	if time.Since(r.sampled) < 10*time.Second {
		return
	}
	r.sampled = time.Now()
	var n int64
	err := r.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM outbox ORDER BY id LIMIT $1) p`, pendingCap).Scan(&n)
	if err == nil {
		r.metrics.Pending.Set(float64(n))
	}
}

const pendingCap = 100_000
