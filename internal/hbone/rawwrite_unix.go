//go:build unix

package hbone

import (
	"syscall"
)

// rawWriter tries a write to a socket without blocking and without touching
// its deadline: one write(2) on the non-blocking descriptor. Arming a write
// deadline costs a timer update in the runtime on every call, which showed up
// as several per cent of the reader's CPU when done on every direct write.
type rawWriter struct {
	rc  syscall.RawConn
	fn  func(uintptr) bool // w.write, bound once
	buf []byte
	n   int
	err error
}

func newRawWriter(w any) *rawWriter {
	sc, ok := w.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	rw := &rawWriter{rc: rc}
	rw.fn = rw.write
	return rw
}

func (w *rawWriter) write(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.buf)
		if err == syscall.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		w.n, w.err = n, err
		return true // never wait for the poller: the caller decides
	}
}

// try writes what the socket takes now. It reports how much was written and
// whether that was all of p; on any error (EAGAIN included) it reports false
// with what was written so far, and the caller goes the ordinary way, which
// yields the ordinary error.
func (w *rawWriter) try(p []byte) (int, bool) {
	w.buf, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.fn)
	w.buf = nil
	if err != nil || w.err != nil {
		return w.n, false
	}
	return w.n, w.n == len(p)
}
