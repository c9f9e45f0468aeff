package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect dials NATS with settings for long-running services: reconnect
// forever (the default gives up after about two minutes) and log state
// changes. The first connection must succeed, so a wrong NATS_URL stops the
// binary at start instead of failing later.
func Connect(serverURL, name string, log *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(serverURL,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.Timeout(5*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil means we closed it ourselves
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(serverURL), err)
	}
	return nc, nil
}

// redact hides credentials embedded in a NATS URL (or a list of them).
func redact(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// StreamOptions tune the streams for the deployment.
type StreamOptions struct {
	Replicas int           // 1 in dev, 3 in production
	MaxAge   time.Duration // how long events stay in the stream
	// Duplicates is the dedup window; it must outlast any relay outage we
	// want deduplicated (consumers are idempotent beyond it anyway).
	Duplicates time.Duration
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.MaxAge == 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if o.Duplicates == 0 {
		o.Duplicates = 2 * time.Hour
	}
	return o
}

// EnsureStreams creates or updates the event and dead-letter streams; safe
// to call from every instance at every start.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	o = o.withDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "sharelinks link events (published from the Postgres outbox)",
		Subjects:    []string{SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.MaxAge,
		Duplicates:  o.Duplicates,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", Stream, err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DLQStream,
		Description: "sharelinks events a consumer gave up on, with the reason",
		Subjects:    []string{DLQPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      30 * 24 * time.Hour,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", DLQStream, err)
	}
	return nil
}

// ConsumerSpec describes a durable pull consumer.
type ConsumerSpec struct {
	Name       string
	Types      []string // event types; empty means all
	MaxDeliver int
	AckWait    time.Duration
}

// EnsureConsumer creates or updates a durable pull consumer. Several
// processes bind to the same durable to share its work.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, c ConsumerSpec) (jetstream.Consumer, error) {
	subjects := make([]string, 0, len(c.Types))
	for _, t := range c.Types {
		subjects = append(subjects, SubjectPrefix+t)
	}
	if len(subjects) == 0 {
		subjects = []string{SubjectPrefix + ">"}
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 20
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        c.Name,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckWait:        c.AckWait,
		MaxDeliver:     c.MaxDeliver,
		FilterSubjects: subjects,
		MaxAckPending:  1000,
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", c.Name, err)
	}
	return cons, nil
}

// RetireConsumers deletes durables an earlier version used and this one
// replaced, so they neither pile up pending messages nor set off the
// consumer-lag alerts. Missing ones are fine: every instance calls this at
// every start.
func RetireConsumers(ctx context.Context, js jetstream.JetStream, names ...string) error {
	for _, n := range names {
		err := js.DeleteConsumer(ctx, Stream, n)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("retire consumer %s: %w", n, err)
		}
	}
	return nil
}
