package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

// asReaper makes the test binary run main: TestSIGTERM starts it as a
// real reaper process, so the signal takes the path a deploy's does.
const asReaper = "SHARELINKS_TEST_RUN_REAPER"

func TestMain(m *testing.M) {
	if os.Getenv(asReaper) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A SIGTERM to a running reaper process is logged when it lands, the
// process says when it has stopped, exits 0, and logs no secret on the way.
func TestSIGTERMIsLoggedWhenItLandsAndWhenDone(t *testing.T) {
	dbURL := testkit.MigratedDB(t)
	natsURL, _ := testkit.NATS(t)
	cmd := exec.Command(os.Args[0], "--database-url", dbURL, "--nats-url", natsURL,
		"--sharelinks-secret", testkit.TestSecret, "--metrics-addr", "127.0.0.1:0", "--reap-interval", "100ms")
	cmd.Env = append(os.Environ(), asReaper+"=1", "LOG_FORMAT=json", "LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	type line struct {
		Msg     string `json:"msg"`
		Service string `json:"service"`
		raw     string
	}
	lines := make(chan line)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l.Msg = "not JSON: " + sc.Text()
			}
			l.raw = sc.Text()
			lines <- l
		}
	}()
	var got []line
	next := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stderr ended before %q; lines: %v", want, got)
				}
				got = append(got, l)
				if strings.HasPrefix(l.Msg, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q within 30 s; lines: %v", want, got)
			}
		}
	}
	next("started")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("stopping: ")
	next("stopped")
	for range lines { // the rest, up to exit
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("reaper exit after SIGTERM: %v, want status 0", err)
	}
	for _, l := range got {
		if l.Service != "reaper" {
			t.Errorf("log line without service=reaper: %s", l.raw)
		}
		if strings.Contains(l.raw, testkit.TestSecret) {
			t.Errorf("the secret is in the log: %s", l.raw)
		}
	}
}
