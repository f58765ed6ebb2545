// Package retry holds a route's retry decisions, made as Envoy makes them:
// which outcomes of an attempt are retried, how many times, and how long to
// wait before the next attempt (fully jittered exponential backoff). The
// route's request timeout, which covers every attempt and every wait, is
// the caller's context.
package retry

import (
	"slices"
	"time"

	"github.com/warrenmesh/warren/waypoint/model"
)

// DefaultBackoff is the base interval when the policy gives none (Envoy's).
const DefaultBackoff = 25 * time.Millisecond

// Outcome is how an attempt ended.
type Outcome struct {
	// Status is the response's status; 0 when none came.
	Status int
	// NotSent: the attempt failed before the request left (no connection,
	// tunnel refused): always safe to try elsewhere.
	NotSent bool
	// Reset: the connection failed after the request left, before a
	// response.
	Reset bool
}

// Next reports whether the request is tried again after attempts attempts
// (1 after the first) ended with o, and the wait before it. Without a
// policy (Attempts 0) only a request that never left is tried once more,
// on another endpoint; with one, also resets and the policy's codes, up to
// Attempts retries. rnd returns a uniform int64 in [0, n).
func Next(p model.RetryPolicy, attempts int, o Outcome, rnd func(n int64) int64) (bool, time.Duration) {
	limit := p.Attempts
	retryable := false
	switch {
	case o.NotSent:
		retryable = true
		limit = max(limit, 1)
	case o.Reset:
		retryable = p.Attempts > 0
	case o.Status != 0:
		retryable = slices.Contains(p.Codes, o.Status)
	}
	if !retryable || attempts > limit {
		return false, 0
	}
	return true, Backoff(p.Backoff, attempts, rnd)
}

// Backoff is the wait before retry n (1 for the first): uniform in
// [0, base·(2^n − 1)], at most 10·base, as Envoy's jittered exponential
// backoff. A zero base is DefaultBackoff.
func Backoff(base time.Duration, n int, rnd func(n int64) int64) time.Duration {
	if base <= 0 {
		base = DefaultBackoff
	}
	ceiling := 10 * base
	upper := ceiling
	if n < 30 {
		upper = min(base*time.Duration(1<<n-1), ceiling)
	}
	return time.Duration(rnd(int64(upper) + 1))
}
