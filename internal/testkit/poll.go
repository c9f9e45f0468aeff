package testkit

import (
	"fmt"
	"testing"
	"time"
)

// pollEvery is how often Eventually re-checks its condition.
const pollEvery = 10 * time.Millisecond

// Eventually calls cond every 10ms until it returns true, and fails the test
// with the formatted message if that has not happened within timeout. cond is
// always called at least once, even with a zero timeout.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not true within %s: %s", timeout, fmt.Sprintf(format, args...))
			return
		}
		time.Sleep(pollEvery)
	}
}
