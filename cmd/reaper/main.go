// Command reaper runs the time-driven work: it expires links past their
// expiry and repairs states that can get stuck. It also records the audit
// trail from the event stream.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/sharelinks/sharelinks/internal/bootstrap"
	"github.com/sharelinks/sharelinks/internal/config"
	"github.com/sharelinks/sharelinks/internal/events"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "reaper:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var s bootstrap.Settings
	set := config.New("reaper")
	bootstrap.Bind(set, &s, ":9092")
	if err := set.Parse(args); err != nil {
		return err
	}
	w, err := bootstrap.Start(ctx, "reaper", version, s)
	if err != nil {
		return err
	}
	defer w.Close()
	audit, err := events.EnsureConsumer(ctx, w.JS, events.ConsumerSpec{Name: "audit", MaxDeliver: 20})
	if err != nil {
		return fmt.Errorf("NATS_URL: %w", err)
	}
	w.Log.Info("consumer audit: acking every event; the audit log is not built yet")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Relay.Run(gctx) })
	g.Go(func() error {
		wk := &events.Worker{Name: "audit", Consumer: audit, JS: w.JS, Handler: events.Ignore,
			MaxDeliver: 20, Log: w.Log, Metrics: w.Consumed}
		return wk.Run(gctx)
	})
	return g.Wait()
}
