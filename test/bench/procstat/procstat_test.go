package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"haproxy", "4242 (haproxy) S 1 4242 4242 0 -1 4194560 1530 0 0 0 250 125 0 0 20 0 3 0 12345 1 2 3", 3750 * time.Millisecond, false},
		{"comm with spaces and parens", "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", 30 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 7 7", 0, true},
		{"no comm", "garbage", 0, true},
		{"not a number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 x 2 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseCPU = %v, %v; want %v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParsePeakRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"ok", "Name:\thaproxy\nVmPeak:\t  100 kB\nVmHWM:\t   18000 kB\nVmRSS:\t 17000 kB\n", 18000 * 1024, false},
		{"missing", "Name:\tkthreadd\n", 0, true},
		{"bad unit", "VmHWM:\t 1 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePeakRSS([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParsePeakRSS = %v, %v; want %v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseListening(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0202FC0A:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0202FC0A:1F90 0102FC0A:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
`
	got, err := ParseListening([]byte(tcp))
	if err != nil {
		t.Fatal(err)
	}
	if !got[5201] || got[8080] || len(got) != 1 {
		t.Errorf("ParseListening = %v, want only 5201 (8080 is an established socket)", got)
	}
	if _, err := ParseListening([]byte("hdr\n 0: nocolon 0 0A\n")); err == nil {
		t.Error("want an error for a malformed address")
	}
}

// TestSelf reads the live files of this test process, which needs no privileges.
func TestSelf(t *testing.T) {
	if _, err := CPU(os.Getpid()); err != nil {
		t.Error(err)
	}
	if rss, err := PeakRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("PeakRSS = %d, %v", rss, err)
	}
	if _, err := Listening(os.Getpid(), 1); err != nil {
		t.Error(err)
	}
}
