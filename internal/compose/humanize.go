package compose

import (
	"fmt"
	"math"
	"time"
)

// expiryLayout renders an absolute expiry such as "Wed 2 Dec 2026 14:00 UTC".
// It is always shown in UTC: the notifier does not know the recipient's zone,
// and an explicit zone is less confusing than a silently wrong local time.
const expiryLayout = "Mon 2 Jan 2006 15:04 MST"

// Humanize renders a positive duration in words for people, e.g. "10 minutes",
// "5 hours" or "3 days". It rounds to the nearest unit and picks the unit so
// that the number stays readable: minutes below an hour, hours below two days,
// days beyond. Durations under half a minute, including zero and negative
// ones, read "less than a minute".
func Humanize(until time.Duration) string {
	minutes := int(math.Round(until.Minutes()))
	if minutes < 1 {
		return "less than a minute"
	}
	if minutes < 60 {
		return plural(minutes, "minute")
	}
	hours := int(math.Round(until.Hours()))
	if hours < 48 {
		return plural(hours, "hour")
	}
	return plural(int(math.Round(until.Hours()/24)), "day")
}

// plural joins a count and a unit, adding an "s" unless the count is one.
func plural(n int, unit string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", unit)
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// expiryWords describes when a link expires relative to now, e.g.
// "expires in 3 days, on Sat 5 Dec 2026 14:00 UTC". It returns "" when the
// link has no expiry (zero time) and "has expired" when it is already past.
// opensWords says when a link that is not open yet opens ("in 2 days, on
// ..."); empty when it is open already.
func opensWords(opensAt, now time.Time) string {
	if now.IsZero() {
		now = time.Now()
	}
	if opensAt.IsZero() || !opensAt.After(now) {
		return ""
	}
	return fmt.Sprintf("in %s, on %s", Humanize(opensAt.Sub(now)), opensAt.UTC().Format(expiryLayout))
}

func expiryWords(expiresAt, now time.Time) string {
	if expiresAt.IsZero() {
		return ""
	}
	if now.IsZero() {
		now = time.Now()
	}
	until := expiresAt.Sub(now)
	if until <= 0 {
		return "has expired"
	}
	return fmt.Sprintf("expires in %s, on %s", Humanize(until), expiresAt.UTC().Format(expiryLayout))
}
