package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BatchHandler processes events together (e.g. one multi-row insert and
// one commit for many events). It must be idempotent for the whole batch.
type BatchHandler func(ctx context.Context, evs []Event) error

// BatchWorker runs a BatchHandler over a durable consumer: it gathers up to
// Size messages, or what arrived within Linger, hands them over at once,
// and acks them all on success (naks them all with a delay on failure).
// Per-event commits would make a burst of a million events cost a million
// WAL flushes.
type BatchWorker struct {
	Name     string
	Consumer jetstream.Consumer
	JS       jetstream.JetStream
	Handler  BatchHandler
	Size     int
	Linger   time.Duration
	Log      *slog.Logger
	Metrics  *ConsumerMetrics
	// MaxDeliver is the consumer's: a message whose batch fails on its
	// last delivery is dead-lettered rather than left unacked for good.
	MaxDeliver int
	// Unavailable is as in Worker: a batch that fails because the database
	// is down is held and handled again, spending no delivery.
	Unavailable func(error) bool

	inner Worker // for dead letters, metrics and readiness
}

// Running reports whether the worker is consuming (for /readyz).
func (w *BatchWorker) Running() bool { return w.inner.Running() }

// Durable is the durable consumer's name.
func (w *BatchWorker) Durable() string { return w.Name }

// Run consumes until ctx ends; the batch in hand is finished first.
func (w *BatchWorker) Run(ctx context.Context) error {
	if w.Size <= 0 {
		w.Size = 500
	}
	if w.Linger <= 0 {
		w.Linger = 20 * time.Millisecond
	}
	w.inner = Worker{Name: w.Name, JS: w.JS, Log: w.Log, Metrics: w.Metrics}
	if w.Metrics != nil {
		for _, r := range []string{"ok", "retry", "terminated", "dead_lettered"} {
			w.Metrics.Consumed.WithLabelValues(w.Name, r)
		}
	}
	it, err := w.Consumer.Messages(jetstream.PullMaxMessages(w.Size))
	if err != nil {
		return fmt.Errorf("consume %s: %w", w.Name, err)
	}
	w.inner.running.Store(true)
	defer w.inner.running.Store(false)
	msgs := make(chan jetstream.Msg, w.Size)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrConnectionClosed) {
					return
				}
				w.Log.Warn("consumer fetch failed; retrying", "consumer", w.Name, "err", err)
				time.Sleep(250 * time.Millisecond)
				continue
			}
			msgs <- m
		}
	}()
	go func() {
		<-ctx.Done()
		it.Drain()
	}()
	for {
		m, ok := <-msgs
		if !ok {
			return nil
		}
		batch := []jetstream.Msg{m}
		timer := time.NewTimer(w.Linger)
	gather:
		for len(batch) < w.Size {
			select {
			case m, ok := <-msgs:
				if !ok {
					break gather
				}
				batch = append(batch, m)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		w.handle(ctx, batch, msgs)
	}
}

// handle runs the handler over a batch and settles it. While the database
// is away, what arrives from incoming joins the held batch: held with it,
// rather than left to age past its AckWait in the buffer and spend a
// delivery (MaxAckPending bounds how many that can be).
func (w *BatchWorker) handle(run context.Context, batch []jetstream.Msg, incoming <-chan jetstream.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	evs := make([]Event, 0, len(batch))
	good := make([]jetstream.Msg, 0, len(batch))
	take := func(ms ...jetstream.Msg) {
		for _, m := range ms {
			e, err := Parse(m.Data())
			if err != nil {
				// Its own time: a hold may have outlived the batch's.
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				w.inner.deadLetter(dctx, m, nil, "unparseable: "+err.Error())
				cancel()
				continue
			}
			evs = append(evs, e)
			good = append(good, m)
		}
	}
	take(batch...)
	if len(evs) == 0 {
		return
	}
	err := w.Handler(ctx, evs)
	err = holdWhileUnavailable(run, w.Unavailable, w.Log.With("consumer", w.Name), func() []jetstream.Msg { return good }, err, func() error {
		for more := true; more; {
			select {
			case m, ok := <-incoming:
				if more = ok; ok {
					take(m)
				}
			default:
				more = false
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return w.Handler(ctx, evs)
	})
	ctx, cancelSettle := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelSettle()
	if err != nil {
		w.Log.Warn("batch failed; retrying", "consumer", w.Name, "events", len(evs), "err", err)
		for i, m := range good {
			if md, merr := m.Metadata(); merr == nil && w.MaxDeliver > 0 && md.NumDelivered >= uint64(w.MaxDeliver) {
				// The server would not deliver it again: park it in the DLQ
				// (alerted on) rather than leave it unacked for good.
				w.inner.deadLetter(ctx, m, &evs[i], "max deliveries: "+err.Error())
				continue
			}
			_ = m.NakWithDelay(time.Second)
			w.inner.count("retry")
		}
		return
	}
	for _, m := range good {
		// Plain ack: a lost ack only redelivers, and the handler is idempotent.
		if err := m.Ack(); err != nil {
			w.Log.Warn("ack failed; the event will be redelivered and handled idempotently", "consumer", w.Name, "err", err)
		}
		w.inner.count("ok")
	}
}
