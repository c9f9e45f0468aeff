package testkit

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recordingTB catches the failure Eventually reports instead of failing the
// real test.
type recordingTB struct {
	testing.TB
	fatal string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
}

func TestEventuallySucceeds(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	rec := &recordingTB{TB: t}
	Eventually(rec, 5*time.Second, func() bool { return calls.Add(1) >= 5 }, "never reached 5")
	if rec.fatal != "" {
		t.Fatalf("Eventually failed: %s", rec.fatal)
	}
	if n := calls.Load(); n != 5 {
		t.Fatalf("cond called %d times after it became true at 5", n)
	}
}

func TestEventuallyFailsAfterTimeout(t *testing.T) {
	t.Parallel()
	rec := &recordingTB{TB: t}
	var calls atomic.Int32
	start := time.Now()
	Eventually(rec, 100*time.Millisecond, func() bool { calls.Add(1); return false }, "queue has %d items", 3)
	elapsed := time.Since(start)
	if !strings.Contains(rec.fatal, "queue has 3 items") {
		t.Fatalf("failure message = %q", rec.fatal)
	}
	if elapsed < 100*time.Millisecond {
		t.Fatalf("gave up after %s, before the 100ms timeout", elapsed)
	}
	// Every 10ms for 100ms: about 10 calls; far fewer means it is not polling.
	if n := calls.Load(); n < 5 {
		t.Fatalf("cond called only %d times in 100ms", n)
	}
}

func TestEventuallyZeroTimeoutChecksOnce(t *testing.T) {
	t.Parallel()
	rec := &recordingTB{TB: t}
	Eventually(rec, 0, func() bool { return true }, "x")
	if rec.fatal != "" {
		t.Fatalf("zero timeout with a true condition failed: %s", rec.fatal)
	}
}
