// Package stats summarises a benchmark metric measured over repeated runs: the median, reported
// with the minimum and maximum so that a reader sees the spread on a noisy shared machine.
package stats

import (
	"math"
	"slices"
)

// Summary is one metric over N runs.
type Summary struct {
	Median, Min, Max float64
	N                int
}

// Summarize returns the median, min and max of xs, ignoring NaNs (a run that could not measure
// the metric). ok is false when nothing is left.
func Summarize(xs []float64) (s Summary, ok bool) {
	vals := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			vals = append(vals, x)
		}
	}
	if len(vals) == 0 {
		return Summary{}, false
	}
	slices.Sort(vals)
	n := len(vals)
	med := vals[n/2]
	if n%2 == 0 {
		med = (vals[n/2-1] + vals[n/2]) / 2
	}
	return Summary{Median: med, Min: vals[0], Max: vals[n-1], N: n}, true
}
