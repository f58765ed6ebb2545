package procstat

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

func TestParseMemory(t *testing.T) {
	// The memory lines of a real /proc/PID/status (a ztunnel at 1000 requests/s), in order.
	const ztunnel = "Name:\tztunnel\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1261384 kB\nVmSize:\t 1261384 kB\n" +
		"VmLck:\t       0 kB\nVmPin:\t       0 kB\nVmHWM:\t   19012 kB\nVmRSS:\t   17944 kB\n" +
		"RssAnon:\t    4576 kB\nRssFile:\t   13368 kB\nRssShmem:\t       0 kB\nVmData:\t   30000 kB\n" +
		"VmStk:\t     132 kB\nVmExe:\t    6000 kB\nVmLib:\t       8 kB\nVmPTE:\t      96 kB\nVmSwap:\t       0 kB\nThreads:\t6\n"
	const kB = 1024
	tests := []struct {
		name    string
		in      string
		want    Memory
		wantErr bool
	}{
		{"ztunnel", ztunnel, Memory{Peak: 19012 * kB, RSS: 17944 * kB, Anon: 4576 * kB, File: 13368 * kB}, false},
		{"shared memory", "VmHWM:\t 30 kB\nVmRSS:\t 30 kB\nRssAnon:\t 10 kB\nRssFile:\t 12 kB\nRssShmem:\t 8 kB\n",
			Memory{Peak: 30 * kB, RSS: 30 * kB, Anon: 10 * kB, File: 12 * kB, Shmem: 8 * kB}, false},
		{"any order, other lines ignored", "RssShmem: 0 kB\nVmHWMx: 5 kB\nRssFile: 2 kB\nRssAnon: 1 kB\nVmRSS: 3 kB\nVmHWM: 4 kB\n",
			Memory{Peak: 4 * kB, RSS: 3 * kB, Anon: 1 * kB, File: 2 * kB}, false},
		{"kernel thread", "Name:\tkthreadd\nThreads:\t1\n", Memory{}, true},
		{"no split (before Linux 4.5)", "VmHWM:\t 18000 kB\nVmRSS:\t 17000 kB\n", Memory{}, true},
		{"bad unit", strings.Replace(ztunnel, "RssAnon:\t    4576 kB", "RssAnon:\t 4 MB", 1), Memory{}, true},
		{"no unit", strings.Replace(ztunnel, "VmHWM:\t   19012 kB", "VmHWM:\t 19012", 1), Memory{}, true},
		{"not a number", strings.Replace(ztunnel, "RssFile:\t   13368 kB", "RssFile:\t 13x kB", 1), Memory{}, true},
		{"negative", strings.Replace(ztunnel, "RssFile:\t   13368 kB", "RssFile:\t -1 kB", 1), Memory{}, true},
		{"twice", ztunnel + "VmRSS:\t 1 kB\n", Memory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMemory([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseMemory = %+v, %v; want %+v, err %v", got, err, tt.want, tt.wantErr)
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
	m, err := ReadMemory(os.Getpid())
	if err != nil || m.Peak <= 0 || m.RSS <= 0 || m.Peak < m.RSS || m.Anon+m.File+m.Shmem != m.RSS {
		t.Errorf("ReadMemory = %+v, %v", m, err)
	}
	if _, err := Listening(os.Getpid(), 1); err != nil {
		t.Error(err)
	}
}

// TestResetPeak raises this process's peak with a large allocation, frees it, and checks that
// ResetPeak brings VmHWM back down.
func TestResetPeak(t *testing.T) {
	pid := os.Getpid()
	if err := ResetPeak(pid); err != nil {
		t.Skipf("clear_refs not writable here: %v", err)
	}
	before, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < size; i += os.Getpagesize() {
		b[i] = 1
	}
	if err := unix.Munmap(b); err != nil {
		t.Fatal(err)
	}
	high, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if high.Peak < before.Peak+size/2 {
		t.Fatalf("peak %d after touching %d bytes, was %d", high.Peak, size, before.Peak)
	}
	if err := ResetPeak(pid); err != nil {
		t.Fatal(err)
	}
	after, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after.Peak > high.Peak-size/2 {
		t.Errorf("peak %d after ResetPeak, want about the current RSS %d (it was %d)", after.Peak, after.RSS, high.Peak)
	}
}
