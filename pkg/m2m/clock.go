package m2m

import "time"

// clock is the source of time and timers; tests inject a fake one so that
// expiry, renewal and backoff are exercised without sleeping.
type clock interface {
	Now() time.Time
	// Since is Now().Sub(t), but for the real clock it reads only the
	// monotonic clock: half the cost of time.Now on the cached path.
	Since(t time.Time) time.Duration
	// After returns a channel that receives once d has passed, and a stop
	// function that releases the timer early.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Since(t time.Time) time.Duration { return time.Since(t) }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
