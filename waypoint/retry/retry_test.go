package retry

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/warrenmesh/warren/waypoint/model"
)

func TestNext(t *testing.T) {
	pol := model.RetryPolicy{Attempts: 2, Codes: []int{503, 502}, Backoff: 10 * time.Millisecond}
	none := model.RetryPolicy{}
	for _, tc := range []struct {
		name     string
		p        model.RetryPolicy
		attempts int
		o        Outcome
		want     bool
	}{
		{"code listed", pol, 1, Outcome{Status: 503}, true},
		{"second retry", pol, 2, Outcome{Status: 502}, true},
		{"attempts spent", pol, 3, Outcome{Status: 503}, false},
		{"code not listed", pol, 1, Outcome{Status: 500}, false},
		{"success", pol, 1, Outcome{Status: 200}, false},
		{"reset with a policy", pol, 1, Outcome{Reset: true}, true},
		{"reset without", none, 1, Outcome{Reset: true}, false},
		{"not sent without a policy: once", none, 1, Outcome{NotSent: true}, true},
		{"not sent without a policy: not twice", none, 2, Outcome{NotSent: true}, false},
		{"not sent with a policy", pol, 2, Outcome{NotSent: true}, true},
		{"code without a policy", none, 1, Outcome{Status: 503}, false},
	} {
		got, wait := Next(tc.p, tc.attempts, tc.o, func(n int64) int64 { return n - 1 })
		if got != tc.want {
			t.Errorf("%s: retry %v, want %v", tc.name, got, tc.want)
		}
		if got && wait <= 0 {
			t.Errorf("%s: wait %v with the largest draw", tc.name, wait)
		}
	}
}

func TestBackoff(t *testing.T) {
	base := 10 * time.Millisecond
	maxDraw := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 10 * time.Millisecond},
		{2, 30 * time.Millisecond},
		{3, 70 * time.Millisecond},
		{4, 100 * time.Millisecond}, // capped at 10 x base
		{40, 100 * time.Millisecond},
	} {
		if got := Backoff(base, tc.n, maxDraw); got != tc.want {
			t.Errorf("retry %d: largest wait %v, want %v", tc.n, got, tc.want)
		}
	}
	if got := Backoff(0, 1, maxDraw); got != DefaultBackoff {
		t.Errorf("default base: %v", got)
	}
	if got := Backoff(base, 3, func(int64) int64 { return 0 }); got != 0 {
		t.Errorf("smallest draw: %v", got)
	}
	// Jitter: the waits of retry 2 spread over [0, 30ms].
	rng := rand.New(rand.NewPCG(7, 8))
	var lo, hi int
	for range 1000 {
		w := Backoff(base, 2, rng.Int64N)
		if w < 0 || w > 30*time.Millisecond {
			t.Fatalf("wait %v outside [0, 30ms]", w)
		}
		if w < 10*time.Millisecond {
			lo++
		}
		if w > 20*time.Millisecond {
			hi++
		}
	}
	// Each third holds about 333 (sigma 15): 5 sigma.
	if lo < 258 || hi < 258 {
		t.Errorf("not spread: %d below 10ms, %d above 20ms of 1000", lo, hi)
	}
}
