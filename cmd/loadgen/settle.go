package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
)

// consumers are the durables the stack runs on the event stream.
var consumers = []string{"notifier", "otp", "records"}

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

// relaysPending sums the relays' own outbox_pending gauges (each relay
// refreshes its gauge once a second).
func (b *bench) relaysPending(ctx context.Context) float64 {
	var sum float64
	for _, addr := range b.st.metricsAddr {
		if v, err := metric(ctx, addr, "sharelinks_outbox_pending", ""); err == nil {
			sum += v
		}
	}
	return sum
}

// settle waits until the pipeline has caught up, so a run is neither
// helped nor hurt by the previous one's leftovers, and so the CPU a run
// costs includes what it made the relay and the consumers do. It polls
// JetStream and the relays' gauges, and asks Postgres only to confirm:
// counting unpublished outbox rows is not free (see BENCHMARKS.md). It
// returns how long that took.
func (b *bench) settle(ctx context.Context, limit time.Duration) time.Duration {
	start := time.Now()
	for ctx.Err() == nil {
		p, err := b.consumerBacklog(ctx)
		if err == nil && p == 0 && b.relaysPending(ctx) == 0 {
			var outbox int
			if err := b.st.pool.QueryRow(ctx, b.st.pendingSQL).Scan(&outbox); err == nil && outbox == 0 {
				return time.Since(start)
			}
		}
		if time.Since(start) > limit {
			b.log.Warn("pipeline did not settle", "consumer_pending", p, "after", limit)
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
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
	b.settle(ctx, 60*time.Second)
	// Postgres backends publish their counters about once a second: over
	// runs of thousands of operations the lag at both ends roughly cancels.
	cpu0, db0 := b.snapCPU(ctx), b.snapDB(ctx)
	waits := b.startWaits(ctx)
	res := fn()
	busy := waits.finish()
	tail := b.settle(ctx, 60*time.Second)
	cpu1, db1 := b.snapCPU(ctx), b.snapDB(ctx)
	if res.ok == 0 {
		return res, cpuCost{}
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(res.ok) }
	dd := delta(cpu0, cpu1)
	proc := func(name string) float64 { return per(dd[name]) }
	total := proc("machine")
	c := cpuCost{api: proc("api"), notifier: proc("notifier"), reaper: proc("reaper"), loadgen: proc("loadgen+nats"),
		postgres: proc("postgres"), shared: proc("pg shared")}
	c.note = fmt.Sprintf("CPU ms/op: api %.2f, notifier %.2f, reaper %.2f, postgres %.2f (+ shared %.2f), loadgen+nats %.2f, not ours %.2f; xacts/op %.1f; WAL flushes/op %.2f; full-page images/op %.2f",
		c.api, c.notifier, c.reaper, c.postgres, c.shared, c.loadgen, max(total-c.outsideDB()-c.postgres-c.shared, 0),
		float64(db1.commits-db0.commits)/float64(res.ok), float64(db1.walSync-db0.walSync)/float64(res.ok), float64(db1.walFPI-db0.walFPI)/float64(res.ok))
	c.note += "; " + busy
	if tail > 300*time.Millisecond {
		c.note += fmt.Sprintf("; pipeline caught up %.1f s after the run", tail.Seconds())
	}
	return res, c
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

// finish stops sampling and describes the top states.
func (w *waitSampler) finish() string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.total == 0 {
		return ""
	}
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range w.counts {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for i, x := range all {
		if i == 4 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", x.k, 100*float64(x.v)/float64(w.total)))
	}
	return "busy backends: " + strings.Join(parts, ", ")
}
