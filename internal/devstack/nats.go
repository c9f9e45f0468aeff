// Package devstack starts the backing services of a local sharelinks stack: an
// embedded NATS JetStream server and a private PostgreSQL cluster. It exists for
// `make run` and `make test` only; the api, notifier and reaper binaries never
// import it.
package devstack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsReadyTimeout bounds how long StartNATS waits for the embedded server to
// accept connections; recovering a large store directory can take a moment.
const natsReadyTimeout = 30 * time.Second

// NATSOption changes how StartNATS runs the embedded server.
type NATSOption func(*natsConfig)

type natsConfig struct {
	port int
}

// WithNATSPort makes the embedded server listen on 127.0.0.1:port. A port <= 0
// (the default) picks a free port; 0 never means the NATS default 4222, which on
// a developer machine is often taken by a system NATS.
func WithNATSPort(port int) NATSOption {
	return func(c *natsConfig) { c.port = port }
}

// StartNATS runs nats-server in-process with JetStream on, listening on loopback
// only, and keeps its JetStream state under dir: a second start on the same dir
// finds the streams and consumers it left. It returns the client URL and a stop
// function that shuts the server down and waits for it; stop is safe to call more
// than once.
func StartNATS(dir string, opts ...NATSOption) (url string, stop func(), err error) {
	var cfg natsConfig
	for _, o := range opts {
		o(&cfg)
	}
	port := cfg.port
	if port <= 0 {
		port = -1 // nats-server: -1 means "any free port"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("embedded NATS: create store dir %s: %w", dir, err)
	}
	if port > 0 {
		// nats-server only logs a failed bind (and we run it with NoLog), so
		// check the port first to turn that into a clear error.
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return "", nil, fmt.Errorf("embedded NATS: port %d on 127.0.0.1 is not free: %w", port, err)
		}
		_ = l.Close()
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "sharelinks-dev",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return "", nil, fmt.Errorf("embedded NATS: configure server (store dir %s): %w", dir, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(natsReadyTimeout) {
		srv.Shutdown()
		return "", nil, fmt.Errorf("embedded NATS: not accepting connections on 127.0.0.1 after %s (store dir %s)", natsReadyTimeout, dir)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return "", nil, errors.New("embedded NATS: JetStream did not start (is store dir " + dir + " writable?)")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		})
	}
	return srv.ClientURL(), stop, nil
}
