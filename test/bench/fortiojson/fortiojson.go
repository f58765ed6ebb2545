// Package fortiojson reads the result that `fortio load -json FILE` writes: request count, rate,
// latency percentiles, sockets opened and HTTP status codes. It keeps only what the benchmark
// reports, in units the report uses (microseconds, per second).
package fortiojson

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Result is one fortio load run.
type Result struct {
	Requests    int64               // requests completed (any status)
	OK          int64               // requests answered 200
	Duration    time.Duration       // actual duration of the run
	QPS         float64             // achieved requests per second
	Sockets     int64               // TCP connections opened by the client
	Percentiles map[float64]float64 // percentile (e.g. 99.9) -> latency in µs
}

type raw struct {
	ActualQPS         float64
	ActualDuration    int64 // ns
	SocketCount       int64
	RetCodes          map[string]int64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
}

// Parse decodes fortio's JSON output.
func Parse(data []byte) (Result, error) {
	var r raw
	if err := json.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("fortio json: %w", err)
	}
	if r.DurationHistogram.Count == 0 {
		return Result{}, fmt.Errorf("fortio json: no requests completed")
	}
	res := Result{
		Requests:    r.DurationHistogram.Count,
		OK:          r.RetCodes["200"],
		Duration:    time.Duration(r.ActualDuration),
		QPS:         r.ActualQPS,
		Sockets:     r.SocketCount,
		Percentiles: make(map[float64]float64, len(r.DurationHistogram.Percentiles)),
	}
	for _, p := range r.DurationHistogram.Percentiles {
		res.Percentiles[p.Percentile] = p.Value * 1e6
	}
	return res, nil
}

// Percentile returns the latency in µs at p, or NaN when fortio was not asked for it.
func (r Result) Percentile(p float64) float64 {
	if v, ok := r.Percentiles[p]; ok {
		return v
	}
	return math.NaN()
}

// Errors is the number of requests that did not get a 200.
func (r Result) Errors() int64 { return r.Requests - r.OK }
