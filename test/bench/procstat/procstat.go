// Package procstat reads what the benchmark needs from /proc: a process's CPU time
// (utime+stime, all its threads), its resident memory (VmHWM, the peak, which ResetPeak starts
// afresh, and the current VmRSS split into anonymous, file-backed and shared pages), and the TCP
// ports listening in its network namespace, which tells when a server started inside a netns is
// ready.
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

// Memory is a process's resident memory from /proc/PID/status, in bytes.
type Memory struct {
	Peak  int64 // VmHWM: the largest VmRSS since the process started or since ResetPeak
	RSS   int64 // VmRSS = Anon + File + Shmem
	Anon  int64 // RssAnon: heap, stacks, other private anonymous mappings
	File  int64 // RssFile: file-backed pages, the binary's and its libraries' included
	Shmem int64 // RssShmem: shared memory, tmpfs
}

// ParseMemory returns the resident memory in the content of /proc/PID/status. Every field of
// Memory must be present (Linux 4.5 and later have them all).
func ParseMemory(status []byte) (Memory, error) {
	var m Memory
	fields := map[string]*int64{"VmHWM": &m.Peak, "VmRSS": &m.RSS, "RssAnon": &m.Anon, "RssFile": &m.File, "RssShmem": &m.Shmem}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		dst, want := fields[key]
		if !ok || !want {
			continue
		}
		if seen[key] {
			return Memory{}, fmt.Errorf("status: %s twice", key)
		}
		seen[key] = true
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("status: %s %q", key, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return Memory{}, fmt.Errorf("status: %s %q", key, f[0])
		}
		*dst = kb * 1024
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	for key := range fields {
		if !seen[key] {
			return Memory{}, fmt.Errorf("status: no %s", key)
		}
	}
	return m, nil
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

// ReadMemory returns the resident memory of process pid.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	return ParseMemory(b)
}

// ResetPeak sets process pid's VmHWM back to its current VmRSS (writing 5 to clear_refs, Linux
// 4.0 and later), so that the next ReadMemory's Peak covers only what happened in between. It
// needs the right to ptrace the process (root, or the same user).
func ResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
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
