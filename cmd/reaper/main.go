// Command reaper runs the time-driven work: it expires links, codes and
// sessions, purges ended links after the retention and repairs stuck
// state (the notifier's records consumer keeps the audit trail). Run any
// number.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sharelinks/sharelinks/internal/bootstrap"
	"github.com/sharelinks/sharelinks/internal/config"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/reaper"
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
	var cfg reaper.Config
	set := config.New("reaper")
	bootstrap.Bind(set, &s, ":9092")
	set.Duration(&cfg.Interval, "REAP_INTERVAL", 15*time.Second, "how often the sweeps run")
	set.Int(&cfg.Batch, "REAP_BATCH", reaper.DefaultBatch, "rows per sweep statement")
	set.Int(&cfg.Workers, "REAP_WORKERS", reaper.DefaultWorkers, "expiry statements run in parallel")
	set.Duration(&cfg.Retention, "RETENTION", 30*24*time.Hour, "purge links this long after they ended (0 keeps forever)")
	if err := set.Parse(args); err != nil {
		return err
	}
	w, err := bootstrap.Start(ctx, "reaper", version, s)
	if err != nil {
		return err
	}
	defer w.Close()
	store := postgres.NewStore(w.Pool, w.Relay.Wake)
	return w.Run(ctx, reaper.New(store, cfg, w.Log, reaper.NewMetrics(w.Registry)).Run)
}
