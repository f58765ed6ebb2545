// Package reuseport listens on node ports that two generations of a
// host-network process share during a rolling update (SO_REUSEPORT: the new
// pod starts beside the old one), and waits for a port that an older
// generation, from before the option was set, holds without it.
package reuseport

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var lc = net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
	return errors.Join(err, serr)
}}

// Listen listens on the TCP address with SO_REUSEPORT.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	return lc.Listen(ctx, "tcp", addr)
}

// Held reports whether a Listen error means that another process holds the
// port without SO_REUSEPORT.
func Held(err error) bool { return errors.Is(err, unix.EADDRINUSE) }

// Wait listens like Listen, and while the port is held calls held (if not
// nil) and tries again every interval. It returns nil, nil when ctx ends
// first.
func Wait(ctx context.Context, addr string, every time.Duration, held func()) (net.Listener, error) {
	for {
		ln, err := Listen(ctx, addr)
		if !Held(err) {
			return ln, err
		}
		if held != nil {
			held()
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(every):
		}
	}
}
