// Command devstack runs the whole sharelinks stack on one machine for
// development (`make run`), and provides the Postgres that `make test` uses.
//
//	devstack               run api, notifier and reaper with NATS and Postgres
//	devstack testdb        print the URL of a Postgres server for tests
//	devstack testdb-stop   stop the private test cluster started by testdb
//
// Everything it keeps lives under -data (default .data): bin/ (the binaries),
// pg/ and testpg/ (private clusters), nats/ (JetStream store), secret, dev-key,
// mail/ and sms/ (the dev sinks).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	os.Exit(realMain())
}

func realMain() int {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	dataDir := fs.String("data", ".data", "directory for binaries, clusters, secrets and sinks")
	readyTimeout := fs.Duration("ready-timeout", 90*time.Second, "how long to wait for the api's /readyz")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: devstack [-data DIR] [-ready-timeout D] [run|testdb|testdb-stop]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	cmd := "run"
	if fs.NArg() > 0 {
		cmd = fs.Arg(0)
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}

	// devstack's own messages go to stderr so `devstack testdb` leaves stdout
	// to the URL alone; children's lines go to stdout.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})).With("component", "devstack")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	data, err := filepath.Abs(*dataDir)
	if err != nil {
		logger.Error("resolve data dir", "err", err)
		return 1
	}

	switch cmd {
	case "run":
		err = runStack(ctx, logger, data, *readyTimeout)
	case "testdb":
		err = testDB(ctx, logger, data)
	case "testdb-stop":
		err = testDBStop(ctx, logger, data)
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			logger.Info("interrupted")
			return 130
		}
		fmt.Fprintf(os.Stderr, "devstack %s: %v\n", cmd, err)
		return 1
	}
	return 0
}
