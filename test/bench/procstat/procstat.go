// Package procstat reads what the benchmark needs from /proc: a process's CPU time
// (utime+stime, all its threads), its peak resident memory (VmHWM), and the TCP ports listening
// in its network namespace, which tells when a server started inside a netns is ready.
package procstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime/stime in /proc/PID/stat; Linux fixes it at 100 for user space.
const userHZ = 100

// ParseCPU returns utime+stime from the content of /proc/PID/stat.
func ParseCPU(stat []byte) (time.Duration, error) {
	// comm (field 2) may hold spaces and parentheses: the fields we want follow the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command field")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after command, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ParsePeakRSS returns VmHWM in bytes from the content of /proc/PID/status.
func ParsePeakRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: VmHWM %q", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: VmHWM: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("status: no VmHWM")
}

// ParseListening returns the local ports in LISTEN state in the content of /proc/PID/net/tcp
// or tcp6.
func ParseListening(netTCP []byte) (map[uint16]bool, error) {
	const listen = "0A"
	ports := map[uint16]bool{}
	sc := bufio.NewScanner(bytes.NewReader(netTCP))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != listen {
			continue
		}
		_, port, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("net/tcp: local address %q", f[1])
		}
		p, err := strconv.ParseUint(port, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("net/tcp: port: %w", err)
		}
		ports[uint16(p)] = true
	}
	return ports, sc.Err()
}

// CPU returns the CPU time process pid has used so far.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseCPU(b)
}

// PeakRSS returns the peak resident set size of process pid, in bytes.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return ParsePeakRSS(b)
}

// Listening reports whether something listens on TCP port in the network namespace of pid.
func Listening(pid int, port uint16) (bool, error) {
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if errors.Is(err, os.ErrNotExist) && f == "tcp6" {
			continue // IPv6 disabled
		}
		if err != nil {
			return false, err
		}
		ports, err := ParseListening(b)
		if err != nil {
			return false, err
		}
		if ports[port] {
			return true, nil
		}
	}
	return false, nil
}
