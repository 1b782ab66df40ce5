// Package wait lets a test wait for what no channel can tell it about:
// another goroutine's progress, a counter in a running server, a connection
// the server closed. It is the one polling helper of pkg's tests.
package wait

import (
	"testing"
	"time"
)

// Deadline turns a hang into a failure. It is generous on purpose (CI runs
// on 2 shared cores): it never asserts that something was fast.
const Deadline = 30 * time.Second

// For polls cond until it holds, and fails the test naming what it waited
// for if that takes longer than Deadline.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}
