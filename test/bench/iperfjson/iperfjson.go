// Package iperfjson reads the result that `iperf3 -c ... -J` prints: bytes the receiver got and
// the rate, which is what a throughput benchmark should quote (the sender's figure counts data
// still sitting in buffers).
package iperfjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Result is one iperf3 client run.
type Result struct {
	Bytes    int64         // bytes received by the server
	Duration time.Duration // receiver's measured duration
	Gbps     float64       // receiver's rate, 10^9 bits per second
	Retrans  int64         // sender's retransmits
}

type raw struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Retransmits int64 `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// Parse decodes iperf3's JSON output.
func Parse(data []byte) (Result, error) {
	var r raw
	if err := json.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("iperf3 json: %w", err)
	}
	if r.Error != "" {
		return Result{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	s := r.End.SumReceived
	if s.Bytes == 0 || s.Seconds == 0 {
		return Result{}, errors.New("iperf3 json: nothing received")
	}
	return Result{
		Bytes:    s.Bytes,
		Duration: time.Duration(s.Seconds * float64(time.Second)),
		Gbps:     s.BitsPerSecond / 1e9,
		Retrans:  r.End.SumSent.Retransmits,
	}, nil
}
