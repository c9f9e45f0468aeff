package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

// groupBundle is a group commit with one round in flight over a table of
// ids, and the sizes of the rounds it ran.
type groupBundle struct {
	pool   *pgxpool.Pool
	group  *postgres.GroupCommit
	mu     sync.Mutex
	rounds []int
}

func setupGroup(t *testing.T) *groupBundle {
	t.Helper()
	return setupGroupSlots(t, 1, 0)
}

// setupGroupSlots is setupGroup with slots rounds in flight, a further
// one starting once the round out has been out for overlap.
func setupGroupSlots(t *testing.T, slots int, overlap time.Duration) *groupBundle {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testkit.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	b := &groupBundle{pool: pool}
	b.group = postgres.NewGroupCommit(pool, slots, overlap, func(n int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.rounds = append(b.rounds, n)
	})
	return b
}

func insert(id int) func(*pgx.Batch) {
	return func(b *pgx.Batch) { b.Queue(`INSERT INTO t VALUES ($1)`, id) }
}

// holdRound starts a round that takes the only slot for a while, and
// returns once it is on the wire, so what is run next has to wait and
// share the following round.
func (b *groupBundle) holdRound(t *testing.T) (wait func()) {
	t.Helper()
	sent := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- b.group.Run(context.Background(), nil, func(batch *pgx.Batch) {
			batch.Queue(`SELECT pg_sleep(0.3)`)
			once.Do(func() { close(sent) })
		})
	}()
	<-sent
	return func() {
		if err := <-done; err != nil {
			t.Errorf("holding round: %v", err)
		}
	}
}

// sharedOneRound checks that the held round was followed by one round
// carrying all n requests that waited for it.
func (b *groupBundle) sharedOneRound(t *testing.T, n int) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(b.rounds, []int{1, n}) {
		t.Errorf("rounds %v, want [1 %d]: the waiting requests should have shared one", b.rounds, n)
	}
}

func (b *groupBundle) ids(t *testing.T) []int {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `SELECT id FROM t ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A request the server rejects fails alone: the others that shared its
// round are committed.
func TestGroupCommitIsolatesARejectedRequest(t *testing.T) {
	t.Parallel()
	b := setupGroup(t)
	if _, err := b.pool.Exec(context.Background(), `INSERT INTO t VALUES (0)`); err != nil {
		t.Fatal(err)
	}
	wait := b.holdRound(t)

	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		id := i + 1
		if i == 4 {
			id = 0 // taken: this request must fail, and only it
		}
		wg.Go(func() { errs[i] = b.group.Run(context.Background(), nil, insert(id)) })
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return b.group.Pending() == n }, "all %d requests waiting", n)
	wait()
	wg.Wait()

	for i, err := range errs {
		var pgErr *pgconn.PgError
		switch {
		case i == 4 && !(errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation):
			t.Errorf("request %d: %v, want a unique violation", i, err)
		case i != 4 && err != nil:
			t.Errorf("request %d: %v", i, err)
		}
	}
	if got, want := b.ids(t), []int{0, 1, 2, 3, 4, 6, 7, 8, 9, 10}; !slices.Equal(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
	b.sharedOneRound(t, n)
}

// With a second slot free, requests that come while a round is out still
// wait for the next round and share it, rather than each opening a round
// (a round trip and a commit) of its own beside it, while they are fewer
// than would start one (see the next test).
func TestGroupCommitWaitersShareTheNextRound(t *testing.T) {
	t.Parallel()
	b := setupGroupSlots(t, 2, time.Minute)
	wait := b.holdRound(t)
	n := postgres.GroupBusy - 1
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = b.group.Run(context.Background(), nil, insert(i)) })
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return b.group.Pending() == n }, "all %d requests waiting", n)
	wait()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	b.sharedOneRound(t, n)
}

// Once enough requests wait behind the round in flight, they start a
// round in the free slot at once, whether or not the round out is slow:
// here it waits on a lock the test holds, and the overlap is a minute.
func TestGroupCommitStartsASecondRoundWhenBusy(t *testing.T) {
	t.Parallel()
	b := setupGroupSlots(t, 2, time.Minute)
	ctx := context.Background()
	holder, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_xact_lock(42)`); err != nil {
		t.Fatal(err)
	}
	sent, held := make(chan struct{}), make(chan error, 1)
	var once sync.Once
	go func() {
		held <- b.group.Run(ctx, nil, func(batch *pgx.Batch) {
			batch.Queue(`SELECT pg_advisory_xact_lock(42)`)
			once.Do(func() { close(sent) }) // queue may be called again on a retry
		})
	}()
	<-sent
	n := postgres.GroupBusy
	var done sync.WaitGroup
	var finished atomic.Int32
	errs := make([]error, n)
	for i := range n {
		done.Go(func() {
			errs[i] = b.group.Run(ctx, nil, insert(i))
			finished.Add(1)
		})
	}
	ok := testkit.Within(10*time.Second, func() bool { return finished.Load() == int32(n) })
	early := finished.Load()
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	done.Wait()
	if err := <-held; err != nil {
		t.Errorf("held round: %v", err)
	}
	if !ok {
		t.Fatalf("%d of %d waiting requests finished while the round ahead was held: they waited for it", early, n)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if got := b.ids(t); len(got) != n {
		t.Errorf("rows %v, want %d", got, n)
	}
}

// A round that is slow (here a 0.3 s statement) does not hold up the
// requests behind it for longer than the overlap: one of them starts a
// round in the second slot.
func TestGroupCommitOverlapsASlowRound(t *testing.T) {
	t.Parallel()
	b := setupGroupSlots(t, 2, 20*time.Millisecond)
	sent, held := make(chan struct{}), make(chan error, 1)
	go func() {
		held <- b.group.Run(context.Background(), nil, func(batch *pgx.Batch) {
			batch.Queue(`SELECT pg_sleep(0.3)`)
			close(sent)
		})
	}()
	<-sent
	if err := b.group.Run(context.Background(), nil, insert(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-held:
		t.Fatalf("the request waited for the slow round to end (%v)", err)
	default:
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if got := b.ids(t); !slices.Equal(got, []int{1}) {
		t.Errorf("rows %v", got)
	}
}

// A request whose caller has gone by the time its round starts writes
// nothing.
func TestGroupCommitSkipsAbandonedRequests(t *testing.T) {
	t.Parallel()
	b := setupGroup(t)
	wait := b.holdRound(t)

	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { gone <- b.group.Run(ctx, nil, insert(1)) }()
	kept := make(chan error, 1)
	testkit.Eventually(t, 5*time.Second, func() bool { return b.group.Pending() == 1 }, "abandoned request waiting")
	go func() { kept <- b.group.Run(context.Background(), nil, insert(2)) }()
	testkit.Eventually(t, 5*time.Second, func() bool { return b.group.Pending() == 2 }, "both requests waiting")
	cancel()
	wait()

	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned request: %v, want context.Canceled", err)
	}
	if err := <-kept; err != nil {
		t.Errorf("kept request: %v", err)
	}
	if got := b.ids(t); !slices.Equal(got, []int{2}) {
		t.Errorf("rows %v, want [2]", got)
	}
}

// Each request alone still commits at once and sees its own result.
func TestGroupCommitLoneRequests(t *testing.T) {
	t.Parallel()
	b := setupGroup(t)
	for id := range 3 {
		var got int
		err := b.group.Run(context.Background(), nil, func(batch *pgx.Batch) {
			batch.Queue(`INSERT INTO t VALUES ($1) RETURNING id * 10`, id).QueryRow(func(r pgx.Row) error { return r.Scan(&got) })
		})
		if err != nil || got != id*10 {
			t.Fatalf("request %d: %d, %v", id, got, err)
		}
	}
	if got := b.ids(t); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("rows %v", got)
	}
}

// A panic in a round fails its requests and leaves the group working.
func TestGroupCommitSurvivesAPanic(t *testing.T) {
	t.Parallel()
	b := setupGroup(t)
	err := b.group.Run(context.Background(), nil, func(batch *pgx.Batch) {
		batch.Queue(`SELECT 1`).QueryRow(func(pgx.Row) error { panic("bug in a callback") })
	})
	if err == nil || !strings.Contains(err.Error(), "bug in a callback") {
		t.Fatalf("panicking request: %v", err)
	}
	for id := range 3 { // more requests than slots: the slot was given back
		if err := b.group.Run(context.Background(), nil, insert(id)); err != nil {
			t.Fatalf("request after the panic: %v", err)
		}
	}
	if got := b.ids(t); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("rows %v", got)
	}
}
