package testkit

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestNATSJetStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, srv := NATS(t)
	if srv.ClientURL() != url {
		t.Fatalf("url %s != srv.ClientURL() %s", url, srv.ClientURL())
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.x", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != 1 {
		t.Fatalf("first publish got sequence %d", ack.Sequence)
	}
}

func TestNATSAtRestartKeepsStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, port := t.TempDir(), FreePort(t)

	srv := NATSAt(t, dir, port)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r.1", []byte("before outage")); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	srv.Shutdown() // the outage; Cleanup shuts it down again, harmlessly
	if c, err := nats.Connect(srv.ClientURL(), nats.Timeout(500*time.Millisecond)); err == nil {
		c.Close()
		t.Fatal("connected to a server that was shut down")
	}

	srv2 := NATSAt(t, dir, port)
	if srv2.ClientURL() != srv.ClientURL() {
		t.Fatalf("restart moved from %s to %s", srv.ClientURL(), srv2.ClientURL())
	}
	nc2, err := nats.Connect(srv2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	s, err := js2.Stream(ctx, "R")
	if err != nil {
		t.Fatalf("stream gone after restart: %v", err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "before outage" {
		t.Fatalf("message after restart = %q", m.Data)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	// Below the ephemeral range, so no outgoing connection can take it.
	if p := FreePort(t); p < 20000 || p >= 32000 {
		t.Fatalf("FreePort = %d", p)
	}
}
