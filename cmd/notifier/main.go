// Command notifier delivers what the API queues: the "Open" notification
// emails and SMS, and the one-time codes of OTP links.
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
		fmt.Fprintln(os.Stderr, "notifier:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var s bootstrap.Settings
	set := config.New("notifier")
	bootstrap.Bind(set, &s, ":9091")
	if err := set.Parse(args); err != nil {
		return err
	}
	w, err := bootstrap.Start(ctx, "notifier", version, s)
	if err != nil {
		return err
	}
	defer w.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Relay.Run(gctx) })
	for _, c := range []events.ConsumerSpec{
		{Name: "notifier", Types: []string{events.NotificationRequested}, MaxDeliver: 10},
		{Name: "otp", Types: []string{events.OTPRequested}, MaxDeliver: 5},
	} {
		cons, err := events.EnsureConsumer(ctx, w.JS, c)
		if err != nil {
			return fmt.Errorf("NATS_URL: %w", err)
		}
		w.Log.Info("consumer " + c.Name + ": acking every event; delivery is not built yet")
		g.Go(func() error {
			wk := &events.Worker{Name: c.Name, Consumer: cons, JS: w.JS, Handler: events.Ignore,
				MaxDeliver: c.MaxDeliver, Log: w.Log, Metrics: w.Consumed}
			return wk.Run(gctx)
		})
	}
	return g.Wait()
}
