package jwtauth

import "time"

// clock is the source of time and timers (like pkg/m2m's): tests inject a
// fake one so that expiry, refresh, retry and cooldown are exercised without
// sleeping on the real clock.
type clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a stop
	// function that releases the timer early.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
