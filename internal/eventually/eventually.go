// Package eventually waits in tests for a condition to hold, with a
// deadline: the one way Warren's tests synchronize with something that
// happens on its own time (a kernel map filled, a status written, a stream
// connected), instead of sleeping and hoping.
package eventually

import (
	"testing"
	"time"
)

// Poll is how often a condition is checked.
const Poll = 20 * time.Millisecond

// Timeout is the default deadline: generous, because CI runs on two busy
// cores, and a condition that holds returns at the first check after it
// does.
const Timeout = 20 * time.Second

// True fails tb (fatally) unless cond returns true within timeout (0:
// Timeout). what names the condition in the failure.
func True(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	NoError(tb, what, timeout, func() error {
		if cond() {
			return nil
		}
		return errFalse
	})
}

// NoError fails tb (fatally) unless f returns nil within timeout (0:
// Timeout); the failure shows f's last error.
func NoError(tb testing.TB, what string, timeout time.Duration, f func() error) {
	tb.Helper()
	if err := Wait(timeout, f); err != nil {
		tb.Fatalf("%s: not within %v: %v", what, orDefault(timeout), err)
	}
}

// Wait returns nil as soon as f does, or f's last error once timeout (0:
// Timeout) has passed; for callers that are not tests or want to go on.
func Wait(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(orDefault(timeout))
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(Poll)
	}
}

func orDefault(d time.Duration) time.Duration {
	if d <= 0 {
		return Timeout
	}
	return d
}

type falseErr struct{}

func (falseErr) Error() string { return "condition still false" }

var errFalse error = falseErr{}
