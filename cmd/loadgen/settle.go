package main

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
)

// consumers are the durables the stack runs on the event stream.
var consumers = []string{"notifier", "otp"}

// consumerBacklog is the number of events the durable consumers have not
// yet handled (pending plus unacknowledged), from JetStream: no database
// work, so it can be polled often.
func (b *bench) consumerBacklog(ctx context.Context) (uint64, error) {
	var pending uint64
	for _, name := range consumers {
		c, err := b.js.Consumer(ctx, events.Stream, name)
		if err != nil {
			continue // not created (yet): nothing pending on it
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, err
		}
		pending += info.NumPending + uint64(info.NumAckPending)
	}
	return pending, nil
}

// settle waits until the pipeline has caught up, so a run is neither
// helped nor hurt by the previous one's leftovers, and so the CPU a run
// costs includes what it made the relay and the consumers do, and little
// else. The outbox is empty once every row committed before the check was
// published (a relay deletes a row only after JetStream stored its
// events), and the consumers' backlog, checked after it, then holds all of
// them. Postgres is asked only once JetStream has nothing pending: counting
// outbox rows is not free (see BENCHMARKS.md). The relays' own
// outbox_pending gauges are not used: each refreshes at most every 10 s,
// which held every settle up to that long. It returns how long it took.
func (b *bench) settle(ctx context.Context, limit time.Duration) time.Duration {
	start := time.Now()
	for ctx.Err() == nil {
		p, err := b.consumerBacklog(ctx)
		if err == nil && p == 0 {
			var outbox int
			if err := b.st.pool.QueryRow(ctx, b.st.pendingSQL).Scan(&outbox); err == nil && outbox == 0 {
				if p, err := b.consumerBacklog(ctx); err == nil && p == 0 {
					return time.Since(start)
				}
			}
		}
		if time.Since(start) > limit {
			b.log.Warn("pipeline did not settle", "consumer_pending", p, "after", limit)
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// dbSnap are cumulative Postgres counters: commits in the bench database,
// and WAL flushes and full-page images of the whole cluster (other
// databases included).
type dbSnap struct {
	commits int64
	walSync int64
	walFPI  int64
}

func (b *bench) snapDB(ctx context.Context) dbSnap {
	var s dbSnap
	_ = b.st.pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.commits)
	_ = b.st.pool.QueryRow(ctx, `SELECT wal_sync, wal_fpi FROM pg_stat_wal`).Scan(&s.walSync, &s.walFPI)
	return s
}

// costed runs fn between two settled states and describes what each
// successful operation cost the machine: CPU per process, commits and WAL
// flushes. The CPU outside our processes is mostly Postgres.
func (b *bench) costed(ctx context.Context, fn func() result) (result, string) {
	res, c := b.costedCPU(ctx, fn)
	return res, c.note
}

// cpuCost is what one operation of a run cost each process, in CPU ms.
type cpuCost struct {
	api, notifier, reaper, loadgen, postgres, shared float64
	note                                             string
}

// outsideDB is the CPU an operation cost everywhere but Postgres: the
// services, the load generator's client and NATS.
func (c cpuCost) outsideDB() float64 { return c.api + c.notifier + c.reaper + c.loadgen }

// costedCPU is costed with the CPU per operation as numbers too (all zero
// when nothing succeeded).
func (b *bench) costedCPU(ctx context.Context, fn func() result) (result, cpuCost) {
	res, c := b.costRun(ctx, fn)
	return res, c.perOp(res.ok)
}

// runCost is what a run cost the machine, as totals, so that the slices of
// an interleaved run (see interleave) add up to one.
type runCost struct {
	cpu                      map[string]time.Duration
	commits, walSync, walFPI int64
	waits                    map[string]int
	tail                     time.Duration // the longest catch-up after a slice
}

// add adds o's totals to c.
func (c *runCost) add(o runCost) {
	if c.cpu == nil {
		c.cpu, c.waits = map[string]time.Duration{}, map[string]int{}
	}
	for k, v := range o.cpu {
		c.cpu[k] += v
	}
	for k, v := range o.waits {
		c.waits[k] += v
	}
	c.commits, c.walSync, c.walFPI = c.commits+o.commits, c.walSync+o.walSync, c.walFPI+o.walFPI
	c.tail = max(c.tail, o.tail)
}

// costRun runs fn between two settled states and totals what it cost.
func (b *bench) costRun(ctx context.Context, fn func() result) (result, runCost) {
	b.settle(ctx, 60*time.Second)
	// Postgres backends publish their counters about once a second: over
	// runs of thousands of operations the lag at both ends roughly cancels.
	cpu0, db0 := b.snapCPU(ctx), b.snapDB(ctx)
	waits := b.startWaits(ctx)
	res := fn()
	counts := waits.finish()
	tail := b.settle(ctx, 60*time.Second)
	cpu1, db1 := b.snapCPU(ctx), b.snapDB(ctx)
	return res, runCost{cpu: delta(cpu0, cpu1), commits: db1.commits - db0.commits, walSync: db1.walSync - db0.walSync,
		walFPI: db1.walFPI - db0.walFPI, waits: counts, tail: tail}
}

// perOp describes c per operation of ops.
func (c runCost) perOp(ops int) cpuCost {
	if ops == 0 {
		return cpuCost{}
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(ops) }
	proc := func(name string) float64 { return per(c.cpu[name]) }
	total := proc("machine")
	cc := cpuCost{api: proc("api"), notifier: proc("notifier"), reaper: proc("reaper"), loadgen: proc("loadgen+nats"),
		postgres: proc("postgres"), shared: proc("pg shared")}
	n := float64(ops)
	cc.note = fmt.Sprintf("CPU ms/op: api %.2f, notifier %.2f, reaper %.2f, postgres %.2f (+ shared %.2f), loadgen+nats %.2f, not ours %.2f; xacts/op %.1f; WAL flushes/op %.2f; full-page images/op %.2f",
		cc.api, cc.notifier, cc.reaper, cc.postgres, cc.shared, cc.loadgen, max(total-cc.outsideDB()-cc.postgres-cc.shared, 0),
		float64(c.commits)/n, float64(c.walSync)/n, float64(c.walFPI)/n)
	if busy := describeWaits(c.waits); busy != "" {
		cc.note += "; " + busy
	}
	if c.tail > 300*time.Millisecond {
		cc.note += fmt.Sprintf("; pipeline caught up %.1f s after the run", c.tail.Seconds())
	}
	return cc
}

// natsConnect connects the bench's own client.
func natsConnect(url string) (*nats.Conn, error) {
	return nats.Connect(url, nats.Name("sharelinks-bench"), nats.MaxReconnects(-1))
}

// connectJS opens the bench's own NATS connection for the backlog checks.
func (b *bench) connectJS() error {
	nc, err := natsConnect(b.st.natsURL)
	if err != nil {
		return err
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	b.js = js
	return nil
}

// pgPids lists the Postgres processes to charge to the bench.
func (b *bench) pgPids(ctx context.Context) pgPids {
	var p pgPids
	rows, err := b.st.pool.Query(ctx, `SELECT pid, datname = current_database() FROM pg_stat_activity
		WHERE datname = current_database() OR backend_type IN ('walwriter', 'checkpointer', 'background writer')`)
	if err != nil {
		return p
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		var ours *bool
		if rows.Scan(&pid, &ours) != nil {
			continue
		}
		if ours != nil && *ours {
			p.ours = append(p.ours, pid)
		} else {
			p.shared = append(p.shared, pid)
		}
	}
	return p
}

// snapCPU snapshots the CPU of the machine, our processes and Postgres.
func (b *bench) snapCPU(ctx context.Context) cpuSnap { return snapCPU(b.pids, b.pgPids(ctx)) }

// waitSampler samples what the bench database's backends are doing (as
// pg_stat_activity shows it) every 50 ms while a run lasts: on CPU, waiting
// for a lock or the WAL, or idle inside a transaction waiting for the
// client. It needs no extension, unlike pg_stat_statements.
type waitSampler struct {
	mu     sync.Mutex
	counts map[string]int
	total  int
	stop   chan struct{}
	done   chan struct{}
}

func (b *bench) startWaits(ctx context.Context) *waitSampler {
	w := &waitSampler{counts: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := b.st.pool.Query(ctx, `SELECT state, coalesce(wait_event_type || ':' || wait_event, '')
				FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
				AND state IN ('active', 'idle in transaction')`)
			if err != nil {
				continue
			}
			for rows.Next() {
				var state, wait string
				if rows.Scan(&state, &wait) != nil {
					continue
				}
				key := wait
				switch {
				case state == "idle in transaction":
					key = "idle in tx (waiting for the client)"
				case wait == "":
					key = "on CPU"
				}
				w.mu.Lock()
				w.counts[key]++
				w.total++
				w.mu.Unlock()
			}
			rows.Close()
		}
	}()
	return w
}

// finish stops sampling and returns how often each state was seen.
func (w *waitSampler) finish() map[string]int {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.counts)
}

// describeWaits names the four states seen most, with their shares.
func describeWaits(counts map[string]int) string {
	total := 0
	for _, v := range counts {
		total += v
	}
	if total == 0 {
		return ""
	}
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range counts {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for i, x := range all {
		if i == 4 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", x.k, 100*float64(x.v)/float64(total)))
	}
	return "busy backends: " + strings.Join(parts, ", ")
}
