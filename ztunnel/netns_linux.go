package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/podroute"
)

// nsThread is an OS thread parked in a pod's network namespace: sockets it
// creates live in that netns. One per pod, kept for the pod's life, because
// creating a thread per dial would cost more than the dial. It only ever
// runs short non-blocking calls (socket, bind, listen), so it is never the
// bottleneck: connecting and all I/O happen on ordinary goroutines.
type nsThread struct {
	work chan func()
	done chan struct{} // closed by stop
	once sync.Once
}

// errThreadStopped: the pod's proxy is closing (a handler still running
// after close, say, asked for a socket).
var errThreadStopped = errors.New("pod netns thread stopped")

func startNSThread(ns *os.File) (*nsThread, error) {
	t := &nsThread{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when stop is called the goroutine exits and
		// the thread dies with it, instead of returning to the scheduler in
		// the pod's netns. The main goroutine is locked to the main thread
		// (cmd/ztunnel's init), so this is never the main thread.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name(), err)
			return
		}
		errc <- nil
		for {
			select {
			case f := <-t.work:
				f()
			case <-t.done:
				return
			}
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return t, nil
}

// do runs f in the netns, or fails once stop was called.
func (t *nsThread) do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case t.work <- func() { errc <- f() }:
	case <-t.done:
		return errThreadStopped
	}
	return <-errc
}

func (t *nsThread) stop() { t.once.Do(func() { close(t.done) }) }

// listen opens a TCP listener in the netns. Not multipath: a SOCKHASH
// refuses MPTCP sockets (Go listens MPTCP by default since 1.24).
func (t *nsThread) listen(network, addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := t.do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// dialTimeout bounds a connect when the caller's context has no deadline.
const dialTimeout = 10 * time.Second

// dial connects to dst from inside the netns, so the source address is the
// pod's, with SO_MARK mark so the eBPF programs do not redirect it again.
// With a valid src it connects from that address instead (IP_TRANSPARENT,
// the client's, on the last hop to the pod's app), with the source mark
// that the pod's policy routing keeps the app's replies in by
// (internal/podroute). Only the socket is made on the netns thread; connect
// waits on the poller.
func (t *nsThread) dial(ctx context.Context, dst netip.AddrPort, mark uint32, src netip.Addr) (*net.TCPConn, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	var family int
	var sa unix.Sockaddr
	if dst.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	}
	var bind unix.Sockaddr
	if src = src.Unmap(); src.IsValid() {
		if src.Is4() != dst.Addr().Is4() {
			return nil, fmt.Errorf("connect %v from %v: address families differ", dst, src)
		}
		mark = podroute.SourceMark(mark)
		if src.Is4() {
			bind = &unix.SockaddrInet4{Addr: src.As4()}
		} else {
			bind = &unix.SockaddrInet6{Addr: src.As16()}
		}
	}
	fd := -1
	err := t.do(func() (err error) {
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_MARK: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TCP_NODELAY: %w", err)
	}
	if bind != nil {
		level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
		if family == unix.AF_INET6 {
			level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("IP_TRANSPARENT: %w", err)
		}
		// Port 0, chosen at connect for the whole 4-tuple rather than
		// reserved for the address at bind: otherwise every connection
		// from one client would need a port of its own, and a busy client
		// would run out of them.
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("IP_BIND_ADDRESS_NO_PORT: %w", err)
		}
		if err := unix.Bind(fd, bind); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("bind %v: %w", src, err)
		}
	}
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %v: %w", dst, err)
	}
	f := os.NewFile(uintptr(fd), "dial") // non-blocking: registered with the poller
	defer f.Close()                      // net.FileConn keeps a dup
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(dialTimeout)
	}
	f.SetWriteDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var connErr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			connErr = err
		case v != 0:
			connErr = unix.Errno(v)
		default:
			// SO_ERROR is 0 both while connecting and once connected.
			if _, err := unix.Getpeername(int(fd)); errors.Is(err, unix.ENOTCONN) {
				return false
			}
		}
		return true
	})
	if werr != nil {
		if ctx.Err() != nil {
			werr = ctx.Err()
		}
		return nil, fmt.Errorf("connect %v: %w", dst, werr)
	}
	if connErr != nil {
		return nil, fmt.Errorf("connect %v: %w", dst, connErr)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("connect %v: %w", dst, err)
	}
	return c.(*net.TCPConn), nil
}
