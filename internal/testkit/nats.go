package testkit

import (
	mrand "math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS starts an in-process NATS server with JetStream on a random loopback
// port, storing under tb.TempDir(), shut down when the test ends. It returns the
// client URL and the server.
func NATS(tb testing.TB) (url string, srv *server.Server) {
	tb.Helper()
	srv = NATSAt(tb, tb.TempDir(), -1)
	return srv.ClientURL(), srv
}

// NATSAt starts an in-process JetStream server on 127.0.0.1:port with its store
// in storeDir. Starting it again on the same storeDir and port after a Shutdown
// brings the streams back, which is how outage tests simulate a NATS restart.
// port <= 0 picks a random port (never the NATS default 4222). The server is
// shut down when the test ends; that is harmless if the test already did.
func NATSAt(tb testing.TB, storeDir string, port int) *server.Server {
	tb.Helper()
	if port <= 0 {
		port = -1
	}
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		tb.Fatalf("testkit: configure NATS (port %d, store %s): %v", port, storeDir, err)
	}
	go srv.Start()
	tb.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		tb.Fatalf("testkit: NATS not ready within 10s on 127.0.0.1:%d (store %s)", port, storeDir)
	}
	if !srv.JetStreamEnabled() {
		tb.Fatalf("testkit: NATS started without JetStream (store %s)", storeDir)
	}
	return srv
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for a server a test starts (and may restart) on a fixed port. It is
// picked below Linux's ephemeral range (32768 and up): a port the kernel
// hands out for :0 can also become the source port of any outgoing
// connection (a test's Postgres pool, say) between this check and the
// server's bind, which made such tests fail now and then.
func FreePort(tb testing.TB) int {
	tb.Helper()
	for range 100 {
		port := 20000 + mrand.IntN(12000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken: try another
		}
		_ = l.Close()
		return port
	}
	tb.Fatal("testkit: no free port in 20000-31999")
	return 0
}

// JetStream connects to the NATS server at url and returns its JetStream
// API; the connection is closed when the test ends.
func JetStream(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
