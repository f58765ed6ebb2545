package iperfjson

import (
	"math"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Result
		wantErr bool
	}{
		{
			name: "ok",
			in: `{"start":{},"end":{"sum_sent":{"bytes":3008102400,"retransmits":3},
				"sum_received":{"start":0,"end":10.0001,"seconds":10.0001,"bytes":24001679872,"bits_per_second":19200077565.1}}}`,
			want: Result{Bytes: 24001679872, Duration: 10000100 * time.Microsecond, Gbps: 19.2000775651, Retrans: 3},
		},
		{name: "iperf error", in: `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, wantErr: true},
		{name: "empty end", in: `{"end":{}}`, wantErr: true},
		{name: "garbage", in: `iperf3: error`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got.Bytes != tt.want.Bytes || got.Retrans != tt.want.Retrans || got.Duration != tt.want.Duration ||
				math.Abs(got.Gbps-tt.want.Gbps) > 1e-6 {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
