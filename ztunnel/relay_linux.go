package ztunnel

import (
	"io"
	"net"
)

// relayTCP copies both ways between two TCP connections until both end,
// passing half-closes on. TCP to TCP, io.Copy splices in the kernel.
func relayTCP(a, b *net.TCPConn) (aToB, bToA int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		aToB, err = io.Copy(b, a)
		if err != nil {
			a.Close()
			b.Close()
			return
		}
		b.CloseWrite()
	}()
	bToA, err := io.Copy(a, b)
	if err != nil {
		a.Close()
		b.Close()
	} else {
		a.CloseWrite()
	}
	<-done
	a.Close()
	b.Close()
	return aToB, bToA
}
