// Package sockfile listens on Unix socket paths that a newer process may take
// over while this one still runs (a DaemonSet's surge during a rolling
// update): listening replaces whatever socket is at the path, and closing
// removes the path only if it is still this listener's own socket.
package sockfile

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Listener is a Unix listener that removes its path at Close only while the
// path is still its own (same device and inode as when it was bound).
type Listener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
	once     sync.Once
}

// Listen binds network ("unix" or "unixpacket") at path, creating its folder
// and replacing a socket already there (another process keeps serving the
// connections it has; new ones come here), with the file mode perm.
func Listen(network, path string, perm os.FileMode) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := &Listener{UnixListener: ln, path: path, dev: st.Dev, ino: st.Ino}
	if err := os.Chmod(path, perm); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Owned reports whether the path is still this listener's socket.
func (l *Listener) Owned() bool {
	var st unix.Stat_t
	return unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino
}

// Close stops listening, and removes the path if it is still this
// listener's: a newer process's socket there stays.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if l.Owned() {
			_ = os.Remove(l.path)
		}
	})
	return err
}
