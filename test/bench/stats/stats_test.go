package stats

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		in   []float64
		want Summary
		ok   bool
	}{
		{"empty", nil, Summary{}, false},
		{"only NaN", []float64{nan, nan}, Summary{}, false},
		{"one", []float64{4}, Summary{4, 4, 4, 1}, true},
		{"odd unsorted", []float64{5, 1, 3}, Summary{3, 1, 5, 3}, true},
		{"even takes the mean of the middle two", []float64{4, 1, 3, 10}, Summary{3.5, 1, 10, 4}, true},
		{"NaN ignored", []float64{2, nan, 6, 4}, Summary{4, 2, 6, 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Summarize(tt.in)
			if ok != tt.ok || got != tt.want {
				t.Errorf("Summarize(%v) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}
