package localcluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// hierarchies are the mounted cgroup hierarchies: every v1 controller mount and the cgroup2
// mount, wherever they are (hybrid hosts have cgroup2 at /sys/fs/cgroup/unified).
type hierarchies struct {
	roots  []string // mount points
	v2     string   // the cgroup2 mount point, if any
	v2only bool
}

func detectHierarchies() (*hierarchies, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := &hierarchies{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		fstype, mp := fields[sep+1], fields[4]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if fields[3] != "/" || seen[mp] {
			continue // a bind of a sub-cgroup, not a hierarchy root
		}
		seen[mp] = true
		h.roots = append(h.roots, mp)
		if fstype == "cgroup2" {
			h.v2 = mp
		}
	}
	if len(h.roots) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy is mounted")
	}
	h.v2only = len(h.roots) == 1 && h.v2 != ""
	sort.Strings(h.roots)
	return h, nil
}

// procsFiles lists the cgroup.procs files of cgroup rel in every hierarchy.
func (h *hierarchies) procsFiles(rel string) []string {
	var out []string
	for _, r := range h.roots {
		out = append(out, filepath.Join(r, rel, "cgroup.procs"))
	}
	return out
}

// ensure creates cgroup rel (and its parents) in every hierarchy. cpuset needs cpus and mems
// copied from the parent before a process can join; cgroup2 needs controllers enabled down the
// path so the kubelet can set limits.
func (h *hierarchies) ensure(rel string) error {
	for _, r := range h.roots {
		parts := strings.Split(strings.Trim(rel, "/"), "/")
		dir := r
		for _, p := range parts {
			parent := dir
			dir = filepath.Join(dir, p)
			if _, err := os.Stat(dir); err == nil {
				continue
			}
			if r == h.v2 && h.v2only {
				enableV2Controllers(parent)
			}
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
					if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) == "" {
						_ = os.WriteFile(filepath.Join(dir, f), b, 0o644)
					}
				}
			}
		}
	}
	return nil
}

func enableV2Controllers(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return
	}
	for _, c := range strings.Fields(string(b)) {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644)
	}
}

// pids returns every process in rel or below, in any hierarchy.
func (h *hierarchies) pids(rel string) []int {
	set := map[int]bool{}
	for _, r := range h.roots {
		_ = filepath.Walk(filepath.Join(r, rel), func(p string, info os.FileInfo, err error) error {
			if err != nil || !info.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, l := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscanf(l, "%d", &pid); err == nil && pid > 0 {
					set[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// killAll SIGKILLs every process in rel until none is left (processes may fork while we kill),
// giving up after timeout.
func (h *hierarchies) killAll(rel string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ps := h.pids(rel)
		if len(ps) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes left in cgroup %s: %v", rel, ps)
		}
		for _, p := range ps {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// remove deletes rel and everything below it in every hierarchy, deepest first.
func (h *hierarchies) remove(rel string) error {
	var errs []string
	for _, r := range h.roots {
		var dirs []string
		_ = filepath.Walk(filepath.Join(r, rel), func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 20; try++ {
				if err = syscall.Rmdir(dirs[i]); err == nil || err == syscall.ENOENT {
					err = nil
					break
				}
				time.Sleep(50 * time.Millisecond) // a dying process may still be accounted
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", dirs[i], err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove cgroups: %s", strings.Join(errs, "; "))
	}
	return nil
}

// exists reports whether rel exists in any hierarchy.
func (h *hierarchies) exists(rel string) bool {
	for _, r := range h.roots {
		if _, err := os.Stat(filepath.Join(r, rel)); err == nil {
			return true
		}
	}
	return false
}
