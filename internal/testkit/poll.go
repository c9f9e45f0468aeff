package testkit

import (
	"fmt"
	"testing"
	"time"
)

// pollEvery is how often Eventually and Within re-check their condition.
const pollEvery = 10 * time.Millisecond

// Eventually calls cond every 10ms until it returns true, and fails the test
// with the formatted message if that has not happened within timeout. cond is
// always called at least once, even with a zero timeout.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	if !Within(timeout, cond) {
		tb.Fatalf("not true within %s: %s", timeout, fmt.Sprintf(format, args...))
	}
}

// Within is Eventually for a test that must clean up before it fails: it
// reports whether cond became true within timeout.
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
}
