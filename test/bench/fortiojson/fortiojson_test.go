package fortiojson

import (
	"math"
	"testing"
	"time"
)

// sample is trimmed from a real `fortio load -json` (v1.68.2) output.
const sample = `{
  "RunType": "HTTP",
  "ActualQPS": 999.8866938285157,
  "ActualDuration": 15001134347,
  "NumThreads": 8,
  "DurationHistogram": {
    "Count": 15000,
    "Min": 0.000113038,
    "Percentiles": [
      {"Percentile": 50, "Value": 0.0006105755051546392},
      {"Percentile": 90, "Value": 0.0009350959175257732},
      {"Percentile": 99, "Value": 0.002},
      {"Percentile": 99.9, "Value": 0.0024928553}
    ]
  },
  "RetCodes": {"200": 14998, "503": 2},
  "SocketCount": 8
}`

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
		check   func(t *testing.T, r Result)
	}{
		{name: "full", in: sample, check: func(t *testing.T, r Result) {
			if r.Requests != 15000 || r.OK != 14998 || r.Errors() != 2 || r.Sockets != 8 {
				t.Errorf("counts: %+v", r)
			}
			if r.Duration != 15001134347*time.Nanosecond {
				t.Errorf("duration %v", r.Duration)
			}
			for p, want := range map[float64]float64{50: 610.58, 90: 935.10, 99: 2000, 99.9: 2492.86} {
				if got := r.Percentile(p); math.Abs(got-want) > 0.01 {
					t.Errorf("p%v = %v µs, want %v", p, got, want)
				}
			}
			if !math.IsNaN(r.Percentile(75)) {
				t.Errorf("p75 was not requested, want NaN")
			}
		}},
		{name: "no requests", in: `{"DurationHistogram":{"Count":0}}`, wantErr: true},
		{name: "not json", in: `fortio: error`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}
