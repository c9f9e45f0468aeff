package devstack

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

func TestStartNATSKeepsStreamsAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	// A port free a moment ago can be taken by another test process before
	// the server binds it (seen once in CI): then take another one.
	var (
		port int
		url  string
		stop func()
		err  error
	)
	for range 5 {
		port = testkit.FreePort(t)
		if url, stop, err = StartNATS(dir, WithNATSPort(port)); err == nil || !strings.Contains(err.Error(), "is not free") {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if want := net.JoinHostPort("127.0.0.1", strconv.Itoa(port)); !strings.Contains(url, want) {
		t.Fatalf("url %q does not use 127.0.0.1:%d", url, port)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "keep.one", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	stop()
	stop() // idempotent

	// The stopped server's sockets can hold the port for a moment after
	// stop returns (seen once in CI: "address already in use" 50 ms
	// later), as a dev stack restarted at once would see too: retry.
	var (
		url2  string
		stop2 func()
	)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		url2, stop2, err = StartNATS(dir, WithNATSPort(port))
		if err == nil || !strings.Contains(err.Error(), "is not free") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	nc2, err := nats.Connect(url2)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js2.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatalf("stream lost across restart: %v", err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "hello" {
		t.Fatalf("message after restart = %q", msg.Data)
	}
}

func TestStartNATSRandomPortAndBusyPort(t *testing.T) {
	t.Parallel()
	url, stop, err := StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if strings.HasSuffix(url, ":4222") {
		t.Fatalf("default port should be random, got %s", url)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))

	_, _, err = StartNATS(t.TempDir(), WithNATSPort(atoi(t, port)))
	if err == nil || !strings.Contains(err.Error(), "not free") {
		t.Fatalf("start on a busy port: err = %v, want 'not free'", err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
