// Package hbone implements HBONE, the tunnel protocol of Istio ambient that
// Warren speaks between ztunnels: HTTP/2 CONNECT over mutual TLS 1.3 (ALPN h2).
// Each CONNECT stream carries one TCP connection; its :authority is the
// destination ip:port, a 200 response opens it, DATA frames carry the bytes
// both ways, END_STREAM half-closes and RST_STREAM resets.
//
// It is a CONNECT-only HTTP/2 peer written on x/net/http2's Framer and hpack
// rather than x/net's Transport and Server, which cost throughput on the hot
// path (make bench; bench/results). What makes it lean: one reader goroutine
// per connection that writes a DATA payload straight to the destination socket
// when nothing is queued for that stream, large frames and windows, pooled
// buffers, and every write's TLS records gathered into one syscall.
//
// Memory is bounded by the flow-control windows (per stream and per
// connection), the stream limit, the header list limit and the frame size
// limit; a peer that breaks them gets RST_STREAM or GOAWAY and a logged reason.
package hbone

import (
	"errors"
	"fmt"
	"time"
)

// Port is the HBONE port on every enrolled pod.
const Port = 15008

// Defaults for Limits. DefaultStreamWindow bounds what one slow reader makes
// a peer buffer, so it sets a ztunnel's peak memory; it need only exceed the
// bandwidth-delay product between nodes (BenchmarkUpload, BenchmarkDownload).
const (
	DefaultMaxConcurrentStreams = 100
	DefaultMaxFrameSize         = 256 << 10
	DefaultStreamWindow         = 1 << 20
	DefaultConnWindow           = 16 << 20
	DefaultMaxHeaderListSize    = 16 << 10
	DefaultHandshakeTimeout     = 10 * time.Second
)

// Limits bound what one HTTP/2 connection may hold. The zero value of a field
// means its default.
type Limits struct {
	// MaxConcurrentStreams is announced to the peer (server) or caps the
	// peer's announcement (client pool).
	MaxConcurrentStreams uint32
	// MaxFrameSize is the largest frame we read, and the largest DATA frame we
	// send. Buffers are pooled at the default size: larger values work but
	// allocate per frame.
	MaxFrameSize uint32
	// StreamWindow and ConnWindow are the receive windows we grant: they bound
	// the bytes buffered for a slow reader per stream and per connection.
	StreamWindow uint32
	ConnWindow   uint32
	// MaxHeaderListSize bounds a decoded header block.
	MaxHeaderListSize uint32
	// HandshakeTimeout bounds the TLS handshake and the exchange of SETTINGS.
	HandshakeTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	def(&l.MaxFrameSize, DefaultMaxFrameSize)
	def(&l.StreamWindow, DefaultStreamWindow)
	def(&l.ConnWindow, DefaultConnWindow)
	def(&l.MaxHeaderListSize, DefaultMaxHeaderListSize)
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return l
}

// Validate reports limits that HTTP/2 does not allow.
func (l Limits) Validate() error {
	l = l.withDefaults()
	switch {
	case l.MaxFrameSize < 16<<10 || l.MaxFrameSize > 1<<24-1:
		return fmt.Errorf("hbone: MaxFrameSize %d outside [16384, 16777215]", l.MaxFrameSize)
	case l.StreamWindow > 1<<31-1 || l.ConnWindow > 1<<31-1:
		return errors.New("hbone: window larger than 2^31-1")
	case l.StreamWindow < 65535 || l.ConnWindow < 65535:
		return errors.New("hbone: window smaller than 65535")
	case l.HandshakeTimeout < 0:
		return errors.New("hbone: negative HandshakeTimeout")
	}
	return nil
}
