package nodeagent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountTest mounts fstype (or binds src, when fstype is "bind") at a new
// directory under parent, and unmounts it at cleanup, before the directory
// is removed: a bind mount of the cgroup2 root must never meet a RemoveAll.
func mountTest(t *testing.T, parent, name, fstype, src string) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if fstype == "bind" {
		err = unix.Mount(src, dir, "", unix.MS_BIND, "")
	} else {
		err = unix.Mount(fstype, dir, fstype, 0, "")
	}
	if err != nil {
		t.Fatalf("mount %s at %s: %v", fstype, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			return
		}
		_ = os.Remove(dir)
	})
	return dir
}

// The --cgroup directory as a DaemonSet mounts it (the host's /sys/fs/cgroup
// at /host/cgroup): the cgroup2 fs itself, or a hybrid host's tmpfs with
// cgroup2 at unified/, where the programs are attached and redirect; anything
// else is refused with what was found, and leaves nothing pinned.
func TestCgroupDetection(t *testing.T) {
	e := newEnv(t)
	root, err := Cgroup2Root()
	must(t, err)
	if got, err := ResolveCgroup2("/sys/fs/cgroup"); err != nil || got != root {
		t.Errorf("ResolveCgroup2(/sys/fs/cgroup) = %q, %v; the cgroup2 root here is %s", got, err, root)
	}

	// Not under t.TempDir: its RemoveAll must not run into a mount left behind.
	base, err := os.MkdirTemp("", "warren-cgroup-test-")
	must(t, err)
	t.Cleanup(func() { _ = os.Remove(base) })

	unified := mountTest(t, base, "unified-host", "bind", root) // /sys/fs/cgroup on most distributions
	if got, err := ResolveCgroup2(unified); err != nil || got != unified {
		t.Errorf("cgroup2 itself: %q, %v", got, err)
	}
	hybrid := mountTest(t, base, "hybrid-host", "tmpfs", "") // /sys/fs/cgroup here
	mountTest(t, hybrid, "unified", "bind", root)
	if got, err := ResolveCgroup2(hybrid); err != nil || got != filepath.Join(hybrid, "unified") {
		t.Errorf("hybrid: %q, %v", got, err)
	}
	empty := mountTest(t, base, "empty", "tmpfs", "")
	_, err = ResolveCgroup2(empty)
	for _, want := range []string{empty + " is a tmpfs, not a cgroup2 filesystem", filepath.Join(empty, "unified") + " does not exist"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no cgroup2: %v, want %q", err, want)
		}
	}
	wrong := mountTest(t, base, "wrong", "tmpfs", "")
	must(t, os.Mkdir(filepath.Join(wrong, "unified"), 0o700))
	if _, err = ResolveCgroup2(wrong); err == nil || !strings.Contains(err.Error(), filepath.Join(wrong, "unified")+" is a tmpfs") {
		t.Errorf("unified/ not cgroup2: %v", err)
	}
	if _, err = ResolveCgroup2(filepath.Join(base, "nothing")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing directory: %v", err)
	}

	opts := e.options("n1")
	opts.Cgroup = empty
	if _, err := Open(ctx, opts); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("Open on a tmpfs: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.bpffs, "warren")); len(entries) != 0 {
		t.Errorf("pins after a refused Open: %v", entries)
	}

	// Attached through the hybrid layout, the programs redirect for real.
	opts.Cgroup = hybrid
	k := e.open(opts)
	if k.opts.Cgroup != filepath.Join(hybrid, "unified") {
		t.Errorf("attached to %s", k.opts.Cgroup)
	}
	if len(e.stillAttached()) != 3 {
		t.Errorf("programs at the cgroup2 root: %v, want connect4, connect6, sockops", e.stillAttached())
	}
	tp := newTopo(t)
	enroll(t, k, tp.Pod("pod-a"))
	tunnel(t, tp.pod, k.OrigDst)
	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "redirected", got, err, "tunnel "+ap(tp.peer4, 8080))
	must(t, k.Uninstall(ctx))
}
