package nodeagent

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ProcNetnsFinder finds a running pod's netns by scanning /proc for a process
// whose cgroup path names the pod's UID (kubelet cgroups are named
// pod<uid> with the cgroupfs driver and pod<uid with '_'>.slice with
// systemd's). The caller asks only for its own node's pods, so on a kernel
// shared by several nodes another node's processes are never picked.
type ProcNetnsFinder struct {
	// Proc is where procfs is mounted; /proc if empty.
	Proc string
}

// PodNetns implements NetnsFinder: /proc/<pid>/ns/net of one of the pod's processes.
func (f ProcNetnsFinder) PodNetns(uid string) (string, error) {
	proc := f.Proc
	if proc == "" {
		proc = "/proc"
	}
	if uid == "" || strings.ContainsAny(uid, "/\n") {
		return "", fmt.Errorf("pod uid %q: %w", uid, ErrNetnsNotFound)
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return "", fmt.Errorf("scan %s: %w", proc, err)
	}
	needles := []string{"pod" + uid, "pod" + strings.ReplaceAll(uid, "-", "_")}
	self, _ := os.Readlink(filepath.Join(proc, "self", "ns", "net"))
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		if !cgroupNames(filepath.Join(dir, "cgroup"), needles) {
			continue
		}
		ns := filepath.Join(dir, "ns", "net")
		// A process of the pod still in the node's netns (a host-network
		// pod, or one caught between fork and setns) is no help.
		if target, err := os.Readlink(ns); err != nil || (self != "" && target == self) {
			continue
		}
		return ns, nil
	}
	return "", fmt.Errorf("pod %s: no process in %s: %w", uid, proc, ErrNetnsNotFound)
}

// cgroupNames reports whether a /proc/PID/cgroup file has a path segment
// that is one of needles, or one of them with a .slice suffix.
func cgroupNames(path string, needles []string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false // the process is gone
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, seg := range strings.Split(parts[2], "/") {
			for _, n := range needles {
				if seg == n || strings.HasSuffix(seg, "-"+n+".slice") || seg == n+".slice" {
					return true
				}
			}
		}
	}
	return false
}
