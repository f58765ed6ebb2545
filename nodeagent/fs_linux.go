package nodeagent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ensureBPFFS mounts a bpffs at dir unless one is there.
func ensureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("bpffs: %s is not a bpffs, and mounting one there failed: %w (mount it on the host and into the agent, or give the agent CAP_SYS_ADMIN)", dir, err)
	}
	return nil
}

// Cgroup2Root finds where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on
// most current distributions, /sys/fs/cgroup/unified on hybrid ones.
func Cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cgroup2: %w", err)
	}
	defer f.Close()
	var found []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 1 || after[0] != "cgroup2" || fields[3] != "/" {
			continue
		}
		found = append(found, unescapeMount(fields[4]))
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("cgroup2: %w", err)
	}
	for _, want := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		for _, p := range found {
			if p == want {
				return p, nil
			}
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return "", errors.New("cgroup2: not mounted")
}

// ResolveCgroup2 returns the cgroup2 directory to attach to for dir: dir
// itself when it is a cgroup2 filesystem, else <dir>/unified when that is
// one (a hybrid host's /sys/fs/cgroup, as mounted into the agent's container
// at /host/cgroup). Otherwise it says what it found.
func ResolveCgroup2(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", fmt.Errorf("cgroup2 %s: %w", dir, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return dir, nil
	}
	unified := filepath.Join(dir, "unified")
	var ust unix.Statfs_t
	uerr := unix.Statfs(unified, &ust)
	if uerr == nil && ust.Type == unix.CGROUP2_SUPER_MAGIC {
		return unified, nil
	}
	found := "does not exist"
	switch {
	case uerr == nil:
		found = "is a " + fsName(ust.Type)
	case !errors.Is(uerr, unix.ENOENT):
		found = uerr.Error()
	}
	return "", fmt.Errorf("cgroup2: %s is a %s, not a cgroup2 filesystem, and %s %s: mount the host's cgroup2 hierarchy there (or its /sys/fs/cgroup, on a hybrid host)",
		dir, fsName(st.Type), unified, found)
}

// fsName names a statfs magic number, for error messages.
func fsName(magic int64) string {
	switch magic {
	case unix.CGROUP2_SUPER_MAGIC:
		return "cgroup2 filesystem"
	case unix.CGROUP_SUPER_MAGIC:
		return "cgroup v1 filesystem"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.SYSFS_MAGIC:
		return "sysfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs (the container's own root, so probably nothing is mounted)"
	case unix.EXT4_SUPER_MAGIC:
		return "ext2/3/4 filesystem"
	case unix.XFS_SUPER_MAGIC:
		return "xfs filesystem"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs filesystem"
	case unix.PROC_SUPER_MAGIC:
		return "procfs"
	case unix.BPF_FS_MAGIC:
		return "bpffs"
	}
	return fmt.Sprintf("filesystem of type 0x%x", magic)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
