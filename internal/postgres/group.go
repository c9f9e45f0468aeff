package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// groupCommit runs the writes of concurrent requests together: the
// statements of every request waiting when a round starts go out in one
// pgx batch, which the server runs as one implicit transaction. A round
// costs one round trip and one commit (one WAL flush) however many
// requests it carries, and that commit is what a write request mostly
// waits for. A request that finds no round in flight starts one at once,
// so a lone request waits for nothing; requests only share a round when
// they would otherwise queue for the disk (see run).
//
// Invariants:
//   - a job's queue func is called once per attempt and must only queue
//     statements whose callbacks record results in the job's own variables
//     (resetting them first), so an attempt can be repeated;
//   - callbacks return only errors from the server's answer, never their
//     own decoding errors: a callback error stops pgx reading the batch,
//     but the server still commits what it ran;
//   - when the server rejects a statement (a *pgconn.PgError) the whole
//     round was rolled back, so each job is run again on its own and only
//     the job at fault fails; any other error (a broken connection) leaves
//     the outcome unknown, so the round's jobs all fail and none is rerun;
//   - jobs are queued in the order of their lock keys, so two rounds (in
//     two api processes) lock rows in the same order and cannot deadlock.
type groupCommit struct {
	pool    *pgxpool.Pool
	wake    func()
	slots   int            // rounds in flight at once (connections used)
	overlap time.Duration  // how long a round is out before another may start beside it
	max     int            // jobs per round
	timeout time.Duration  // per round: a round outlives the request that started it
	observe func(jobs int) // called with each round's size

	mu      sync.Mutex
	pending []*groupJob
	active  int
}

type groupJob struct {
	ctx   context.Context
	key   []byte
	queue func(b *pgx.Batch)
	err   error
	done  chan struct{}
}

// Defaults measured with make bench (BENCHMARKS.md, session 4): with 16
// clients, one round in flight created 4,964 links/s and verified 3,243
// per second across a million links, two 4,804 and 3,076, four 4,353 and
// 3,036 (no group commit: 4,143 and 2,449). The second slot is kept for a
// slow round (a row lock, a slow flush), which then cannot hold up every
// write of the process for longer than the overlap, but is no longer used
// while rounds are quick (session 6, alternating runs: transactions per
// verify 0.2-0.3 against 0.4, verifies of one hot link 2,351 and 2,426/s
// against 1,972 and 1,962; across a million links and for creates the
// same within the host's noise).
//
// groupBusy: a round's statements run one after another in one backend, so
// while a full round is out Postgres works on one core however many it
// has. Once groupBusy requests wait behind it, they start a round in the free
// slot at once: it still shares one commit among them, and both cores
// run statements. Session 8, four alternating pairs of make bench runs
// (verify and otp scenarios) on a host where the bare UPDATE is CPU- and
// not flush-bound: verifies of open links across a million links 2,023/s
// on average against 1,696 (ratio to the bare UPDATE 0.33-0.47 against
// 0.29-0.39), code verifies 1,614/s against 1,342; creates at c=16 the
// same within the host's noise.
const (
	groupSlots   = 2
	groupOverlap = 5 * time.Millisecond
	groupBusy    = 4
	groupMax     = 64
	groupTimeout = 30 * time.Second
)

func newGroupCommit(pool *pgxpool.Pool, wake func()) *groupCommit {
	return &groupCommit{pool: pool, wake: wake, slots: groupSlots, overlap: groupOverlap, max: groupMax, timeout: groupTimeout}
}

// run queues one request's statements into the next round and waits for
// that round's commit. key orders the job's row locks among other jobs'
// (nil when it takes none that others could want).
//
// A request that finds no round in flight starts one. One that finds a
// round in flight waits for the next, which the round's drainer starts
// when it returns, with every request that came meanwhile; only when the
// round in flight is slow (still out after overlap: a row lock, a slow
// flush) does it start a round of its own beside it, in a free slot, or
// when groupBusy requests are waiting (a round's worth). A
// second round opened as soon as a request arrived carried a request or
// two and cost its own round trip and commit; sharing the next round is
// where the group commit saves.
func (g *groupCommit) run(ctx context.Context, key []byte, queue func(b *pgx.Batch)) error {
	j := &groupJob{ctx: ctx, key: key, queue: queue, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, j)
	lead := g.active == 0 || (g.active < g.slots && len(g.pending) >= groupBusy)
	if lead {
		g.active++
	}
	g.mu.Unlock()
	if !lead && g.slots > 1 {
		t := time.NewTimer(g.overlap)
		select {
		case <-j.done:
		case <-t.C:
			g.mu.Lock()
			lead = g.active < g.slots && slices.Contains(g.pending, j)
			if lead {
				g.active++
			}
			g.mu.Unlock()
		}
		t.Stop()
	}
	if lead {
		g.drain(j)
	}
	<-j.done
	return j.err
}

// drain runs rounds until nothing is pending. A request's goroutine stops
// draining once its own job is done, handing the slot on to a goroutine,
// so its answer never waits for other requests' rounds.
func (g *groupCommit) drain(own *groupJob) {
	for {
		g.mu.Lock()
		n := min(len(g.pending), g.max)
		if n == 0 {
			g.active--
			g.mu.Unlock()
			return
		}
		round := slices.Clone(g.pending[:n])
		g.pending = slices.Delete(g.pending, 0, n)
		g.mu.Unlock()

		g.commit(round)

		if own != nil && finished(own) {
			g.mu.Lock()
			idle := len(g.pending) == 0
			if idle {
				g.active--
			}
			g.mu.Unlock()
			if !idle {
				go g.drain(nil)
			}
			return
		}
	}
}

func finished(j *groupJob) bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// commit runs one round and settles each of its jobs. A panic (a bug in a
// callback) fails the round's jobs instead of leaving their requests, and
// every later one, waiting on a slot that is never given back.
func (g *groupCommit) commit(round []*groupJob) {
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("group commit: panic: %v", p)
			for _, j := range round {
				if !finished(j) {
					j.finish(err)
				}
			}
		}
	}()
	live := round[:0]
	for _, j := range round {
		if err := j.ctx.Err(); err != nil {
			j.finish(err) // its request is gone: do not write for it
			continue
		}
		live = append(live, j)
	}
	if len(live) == 0 {
		return
	}
	slices.SortStableFunc(live, func(a, b *groupJob) int { return bytes.Compare(a.key, b.key) })
	if g.observe != nil {
		g.observe(len(live))
	}
	err := g.send(live)
	var pgErr *pgconn.PgError
	if err == nil || len(live) == 1 || !errors.As(err, &pgErr) {
		for _, j := range live {
			j.finish(err)
		}
		return
	}
	// The server rejected one job's statement and rolled the round back:
	// run each job alone so the others still commit.
	for _, j := range live {
		j.finish(g.send([]*groupJob{j}))
	}
}

func (g *groupCommit) send(jobs []*groupJob) error {
	b := &pgx.Batch{}
	for _, j := range jobs {
		j.queue(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	conn, err := g.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("group commit of %d requests: %w", len(jobs), err)
	}
	// Released even when a callback panics: the pool then destroys the
	// connection, which is left in the middle of the batch's answers.
	defer conn.Release()
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("group commit of %d requests: %w", len(jobs), err)
	}
	g.wake()
	return nil
}

func (j *groupJob) finish(err error) {
	j.err = err
	close(j.done)
}

// requeue queues fresh copies of src's statements into dst. A batch that
// was sent holds statement descriptions of the connection it went out on,
// so a repeated attempt must not reuse its queued queries.
func requeue(dst, src *pgx.Batch) {
	for _, q := range src.QueuedQueries {
		dst.Queue(q.SQL, q.Arguments...).Fn = q.Fn
	}
}

// InstrumentGroupCommit registers a histogram of the requests each group
// commit carried: mostly 1 when idle, and growing with concurrent writes.
func (s *Store) InstrumentGroupCommit(reg prometheus.Registerer) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sharelinks_db_group_commit_requests",
		Help:    "Requests whose writes went out in one group commit (one round trip, one transaction).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
	})
	reg.MustRegister(h)
	s.group.observe = func(n int) { h.Observe(float64(n)) }
}
