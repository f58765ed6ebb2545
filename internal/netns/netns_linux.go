package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// RunDir is where named network namespaces are bind-mounted, as by `ip netns add`.
const RunDir = "/run/netns"

// Do runs f on a fresh OS thread switched into the network namespace ns (an
// open /proc/PID/ns/net or /run/netns/<name>). The thread is discarded
// afterwards. Sockets f creates stay in ns and may be used from any goroutine.
func Do(ns *os.File, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine instead of
		// returning to the scheduler in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name(), err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Cookie returns the network namespace's cookie, the id eBPF programs see
// through bpf_get_netns_cookie.
func Cookie(ns *os.File) (uint64, error) {
	var cookie uint64
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		cookie, err = SocketCookie(fd)
		return err
	})
	return cookie, err
}

// SocketCookie returns the cookie of the network namespace a socket lives in.
func SocketCookie(fd int) (uint64, error) {
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", err)
	}
	return v, nil
}

// Add creates a network namespace with its loopback up, bind-mounted at
// /run/netns/<name>, and returns it open.
func Add(name string) (*os.File, error) {
	if name == "" || filepath.Base(name) != name {
		return nil, fmt.Errorf("netns name %q: not a plain file name", name)
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	path := filepath.Join(RunDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see Do
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- loopbackUp()
	}()
	if err := <-errc; err != nil {
		_ = Delete(name)
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	ns, err := os.Open(path)
	if err != nil {
		_ = Delete(name)
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	return ns, nil
}

// Delete unmounts and removes /run/netns/<name>. The namespace itself lives
// on while a process or an open file still holds it.
func Delete(name string) error {
	path := filepath.Join(RunDir, name)
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}
