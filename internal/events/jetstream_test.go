package events_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/testkit"
)

func TestRetireConsumers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, _ := testkit.NATS(t)
	js := testkit.JetStream(t, url)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"audit", "records"} {
		if _, err := events.EnsureConsumer(ctx, js, events.ConsumerSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	// "webhooks" does not exist: retiring it is not an error, and running
	// it again (every instance, every start) is not either.
	for range 2 {
		if err := events.RetireConsumers(ctx, js, "audit", "webhooks"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Consumer(ctx, events.Stream, "audit"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("audit consumer after retiring: %v", err)
	}
	var left []string
	stream, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	for n := range names.Name() {
		left = append(left, n)
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}
	if !slices.Equal(left, []string{"records"}) {
		t.Fatalf("consumers left: %v, want only records", left)
	}
}
