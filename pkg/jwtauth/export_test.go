package jwtauth

import "time"

// SetClock makes the Validator built from cfg read time and arm timers
// through c (the tests' fake clock).
func SetClock(cfg *Config, c interface {
	Now() time.Time
	After(time.Duration) (<-chan time.Time, func())
}) {
	cfg.clock = c
}
