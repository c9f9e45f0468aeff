package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler processes one event. It returns nil (ack), a *RetryError (nak
// with delay), a *PermanentError (dead-letter and terminate), or any other
// error (retried with the consumer's backoff).
type Handler func(ctx context.Context, e Event, deliveries uint64) error

// RetryError asks for redelivery after Delay.
type RetryError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryError) Error() string { return fmt.Sprintf("retry in %s: %v", e.Delay, e.Err) }
func (e *RetryError) Unwrap() error { return e.Err }

// PermanentError means retrying cannot help.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Retry wraps err as a retry after d.
func Retry(d time.Duration, err error) error { return &RetryError{Delay: d, Err: err} }

// Permanent wraps err as permanent.
func Permanent(err error) error { return &PermanentError{Err: err} }

// ConsumerMetrics count outcomes per consumer.
type ConsumerMetrics struct {
	Consumed *prometheus.CounterVec
}

// NewConsumerMetrics registers sharelinks_events_consumed_total on reg.
func NewConsumerMetrics(reg prometheus.Registerer) *ConsumerMetrics {
	m := &ConsumerMetrics{Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharelinks_events_consumed_total", Help: "Events handled by consumer and result.",
	}, []string{"consumer", "result"})}
	reg.MustRegister(m.Consumed)
	return m
}

// Worker runs a handler over a durable consumer with bounded concurrency.
type Worker struct {
	Name        string
	Consumer    jetstream.Consumer
	JS          jetstream.JetStream
	Handler     Handler
	Concurrency int
	MaxDeliver  int
	// Backoff gives the delay before delivery n+1 after a plain error.
	Backoff func(deliveries uint64) time.Duration
	Log     *slog.Logger
	Metrics *ConsumerMetrics
	// OnDeadLetter, when set, records the give-up in Postgres (e.g. marks the
	// notification failed) before the message is terminated.
	OnDeadLetter func(ctx context.Context, e Event, reason string) error
	// Unavailable, when set, tells the errors that mean the database is
	// down rather than that this event failed (postgres.Unavailable). Such
	// an event is held in place, its AckWait renewed, and handled again
	// until the database is back or the worker stops: an outage longer
	// than the retries would otherwise spend its deliveries and
	// dead-letter events that were never at fault.
	Unavailable func(error) bool

	wg      sync.WaitGroup
	running atomic.Bool
}

// Running reports whether the worker is consuming (for /readyz).
func (w *Worker) Running() bool { return w.running.Load() }

// Runner is a consumer loop that can say whether it runs.
type Runner interface {
	Running() bool
	Durable() string
}

// Durable is the durable consumer's name.
func (w *Worker) Durable() string { return w.Name }

// ReadyCheck fails while any of the consumers is not running.
func ReadyCheck(runners ...Runner) func(context.Context) error {
	return func(context.Context) error {
		for _, w := range runners {
			if !w.Running() {
				return fmt.Errorf("consumer %s not running", w.Durable())
			}
		}
		return nil
	}
}

// Run consumes until ctx ends, then stops fetching and waits for in-flight
// handlers to finish (each acks or naks), so a deploy leaves nothing to
// wait out AckWait.
func (w *Worker) Run(ctx context.Context) error {
	if w.Concurrency <= 0 {
		w.Concurrency = 4
	}
	if w.Backoff == nil {
		w.Backoff = func(n uint64) time.Duration { return min(time.Second<<min(n, 10), time.Minute) }
	}
	// Buffer only what we work on: buffered messages would age past AckWait.
	it, err := w.Consumer.Messages(jetstream.PullMaxMessages(w.Concurrency))
	if err != nil {
		return fmt.Errorf("consume %s: %w", w.Name, err)
	}
	if w.Metrics != nil { // export zeros, so rate() and increase() alerts see the first event
		for _, r := range []string{"ok", "retry", "terminated", "dead_lettered"} {
			w.Metrics.Consumed.WithLabelValues(w.Name, r)
		}
	}
	w.running.Store(true)
	defer w.running.Store(false)
	go func() {
		<-ctx.Done()
		it.Drain()
	}()
	sem := make(chan struct{}, w.Concurrency)
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			if ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) {
				break
			}
			w.Log.Warn("consumer fetch failed; retrying", "consumer", w.Name, "err", err)
			select { // do not spin while NATS is away
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		w.waitSlot(sem, msg)
		w.wg.Add(1)
		go func() {
			defer func() { <-sem; w.wg.Done() }()
			w.handle(ctx, msg)
		}()
	}
	w.wg.Wait()
	return nil
}

// waitSlot waits for a free handler slot for msg, renewing its AckWait
// while every slot is busy (handlers holding events through a database
// outage may keep them so for long), so it does not spend a delivery
// waiting.
func (w *Worker) waitSlot(sem chan struct{}, msg jetstream.Msg) {
	select {
	case sem <- struct{}{}:
		return
	default:
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case sem <- struct{}{}:
			return
		case <-tick.C:
			_ = msg.InProgress()
		}
	}
}

func (w *Worker) count(result string) {
	if w.Metrics != nil {
		w.Metrics.Consumed.WithLabelValues(w.Name, result).Inc()
	}
}

// handle runs the handler over one message and settles it. run is the
// worker's context: it ends holding for the database, never a handler.
func (w *Worker) handle(run context.Context, msg jetstream.Msg) {
	// Settling (acks, naks, dead letters) gets its own time.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var deliveries uint64 = 1
	if md, err := msg.Metadata(); err == nil {
		deliveries = md.NumDelivered
	}
	e, err := Parse(msg.Data())
	if err != nil {
		w.deadLetter(ctx, msg, nil, "unparseable: "+err.Error())
		return
	}
	log := w.Log.With("consumer", w.Name, "event_id", e.ID, "type", e.Type, "delivery", deliveries)
	attempt := func() error {
		// Each attempt gets its own context: a shutdown must not cut a
		// send in half.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return w.Handler(ctx, e, deliveries)
	}
	err = w.holdWhileUnavailable(run, log, msg, attempt(), attempt)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second) // holding may have outlived the first
	defer cancel()
	var retry *RetryError
	var perm *PermanentError
	switch {
	case err == nil:
		if aerr := msg.DoubleAck(ctx); aerr != nil {
			log.Warn("ack failed; the event will be redelivered and handled idempotently", "err", aerr)
		}
		w.count("ok")
	case errors.As(err, &perm):
		log.Warn("event failed permanently", "err", err)
		w.deadLetter(ctx, msg, &e, err.Error())
	case w.MaxDeliver > 0 && deliveries >= uint64(w.MaxDeliver):
		log.Warn("event out of deliveries", "err", err)
		w.deadLetter(ctx, msg, &e, "max deliveries: "+err.Error())
	case errors.As(err, &retry):
		log.Info("event will be retried", "err", err, "delay", retry.Delay)
		_ = msg.NakWithDelay(retry.Delay)
		w.count("retry")
	default:
		d := w.Backoff(deliveries)
		log.Warn("event handler failed; retrying", "err", err, "delay", d)
		_ = msg.NakWithDelay(d)
		w.count("retry")
	}
}

// holdWhileUnavailable retries again, in place, while err is one of the
// database's outages (unavailable), renewing msg's AckWait so that no
// delivery is spent waiting for it. It returns the last error: nil once
// the database is back and the work done, or the error to settle the
// message with (another kind, or the outage's when run ends).
func (w *Worker) holdWhileUnavailable(run context.Context, log *slog.Logger, msg jetstream.Msg, err error, again func() error) error {
	unavailable := w.Unavailable
	if unavailable == nil || err == nil || !unavailable(err) {
		return err
	}
	log.Warn("database unavailable; holding the event until it is back", "err", err)
	for round := 0; err != nil && unavailable(err); round++ {
		_ = msg.InProgress()
		// Well inside any AckWait (30 s by default), and soon after the
		// database is back.
		t := time.NewTimer(min(100*time.Millisecond<<min(round, 3), time.Second))
		select {
		case <-run.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		err = again()
	}
	if err == nil {
		log.Info("database back; held event handled")
	}
	return err
}

// deadLetter republishes the message to the DLQ with its reason, then
// terminates it so it never blocks the consumer.
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, e *Event, reason string) {
	if e != nil && w.OnDeadLetter != nil {
		if err := w.OnDeadLetter(ctx, *e, reason); err != nil {
			w.Log.Error("recording dead letter failed; leaving message for redelivery", "consumer", w.Name, "err", err)
			_ = msg.NakWithDelay(30 * time.Second)
			w.count("retry")
			return
		}
	}
	dl := &nats.Msg{Subject: DLQPrefix + w.Name, Data: msg.Data(), Header: nats.Header{}}
	dl.Header.Set("Sharelinks-Reason", truncate(reason, 1000))
	dl.Header.Set("Sharelinks-Subject", msg.Subject())
	if md, err := msg.Metadata(); err == nil {
		raw, _ := json.Marshal(md.Sequence)
		dl.Header.Set("Sharelinks-Sequence", string(raw))
	}
	if _, err := w.JS.PublishMsg(ctx, dl); err != nil {
		// Without a dead letter, leave the message for redelivery rather than lose it.
		w.Log.Error("dead-letter publish failed; leaving message for redelivery", "consumer", w.Name, "err", err)
		_ = msg.NakWithDelay(30 * time.Second)
		w.count("retry")
		return
	}
	_ = msg.TermWithReason(truncate(reason, 200))
	w.count("dead_lettered")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
