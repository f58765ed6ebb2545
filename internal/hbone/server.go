package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/warrenmesh/warren/internal/identity"
)

// Request is what a Handler decides on: one CONNECT stream.
type Request struct {
	// Authority is the destination the client asked for.
	Authority netip.AddrPort
	// Peer is the client's verified SPIFFE ID.
	Peer identity.ID
	// Header holds the regular request headers (traceparent, baggage, ...),
	// with canonical keys.
	Header http.Header
	// RemoteAddr is the client tunnel's address.
	RemoteAddr net.Addr
	// StreamID is the HTTP/2 stream, for logs.
	StreamID uint32
}

// StatusError is a refusal with an HTTP status: Handlers return it to answer
// something other than 503, and Pool.Dial returns it for a non-200 response.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("hbone: status %d: %v", e.Code, e.Err)
	}
	return fmt.Sprintf("hbone: status %d", e.Code)
}

func (e *StatusError) Unwrap() error { return e.Err }

// Forbidden is the refusal for a tunnel that policy denies.
func Forbidden(err error) error { return &StatusError{Code: http.StatusForbidden, Err: err} }

// Handler decides on a CONNECT request. It returns the connection to relay the
// tunnel to (usually a dial to req.Authority), or an error: a *StatusError for
// its status, anything else for 503. ctx ends when the stream or the
// connection does.
type Handler func(ctx context.Context, req *Request) (net.Conn, error)

// StreamStats describes a finished tunnel, for telemetry.
type StreamStats struct {
	// ToUpstream and FromUpstream count payload bytes each way.
	ToUpstream, FromUpstream int64
	Duration                 time.Duration
	// Status is the response sent (200 for a tunnel that opened).
	Status int
	Err    error
}

// Server accepts HBONE connections.
type Server struct {
	// TLSConfig must come from identity.ServerConfig (TLS 1.3, client
	// certificates verified, ALPN h2). Required.
	TLSConfig *tls.Config
	// Handler decides on each stream. Required.
	Handler Handler
	// Logger receives refusals and protocol errors; nil discards.
	Logger *slog.Logger
	Limits Limits
	// IdleTimeout closes a connection with no stream for this long (0: never).
	IdleTimeout time.Duration
	// OnStreamDone, if set, is called when a stream ends.
	OnStreamDone func(req *Request, st StreamStats)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	draining  bool
	wg        sync.WaitGroup
}

// errStreamGone ends a stream whose client left while the Handler decided.
var errStreamGone = errors.New("hbone: stream ended before its response")

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("hbone: server closed")

func (srv *Server) logger() *slog.Logger {
	if srv.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return srv.Logger
}

func (srv *Server) validate() error {
	switch {
	case srv.TLSConfig == nil:
		return errors.New("hbone: Server.TLSConfig is nil")
	case srv.Handler == nil:
		return errors.New("hbone: Server.Handler is nil")
	}
	return srv.Limits.Validate()
}

// Serve accepts connections on ln until Close or Shutdown.
func (srv *Server) Serve(ln net.Listener) error {
	if err := srv.validate(); err != nil {
		return err
	}
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		return ErrServerClosed
	}
	if srv.listeners == nil {
		srv.listeners = map[net.Listener]struct{}{}
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, ln)
		srv.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			srv.mu.Lock()
			closing := srv.closing
			srv.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, net.ErrClosed) && isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				srv.logger().Warn("hbone: accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept: %w", err)
		}
		backoff = 0
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			srv.ServeConn(nc)
		}()
	}
}

func isTemporary(err error) bool {
	// EMFILE and friends: the listener is fine, we are out of something.
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ServeConn runs the TLS handshake and serves HBONE on nc until it closes.
func (srv *Server) ServeConn(nc net.Conn) {
	if err := srv.validate(); err != nil {
		srv.logger().Error("hbone: bad server configuration", "err", err)
		nc.Close()
		return
	}
	lim := srv.Limits.withDefaults()
	log := srv.logger()
	raw := &batchConn{Conn: nc}
	tc := tls.Server(raw, srv.TLSConfig)
	nc.SetDeadline(time.Now().Add(lim.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		log.Info("hbone: handshake failed", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != identity.ALPN {
		log.Info("hbone: refusing connection", "remote", nc.RemoteAddr(), "reason", "ALPN is not h2", "alpn", cs.NegotiatedProtocol)
		nc.Close()
		return
	}
	peer, err := identity.PeerID(cs)
	if err != nil {
		log.Info("hbone: refusing connection", "remote", nc.RemoteAddr(), "reason", err)
		nc.Close()
		return
	}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(tc, preface[:]); err != nil || !bytes.Equal(preface[:], []byte(http2.ClientPreface)) {
		log.Info("hbone: refusing connection", "remote", nc.RemoteAddr(), "peer", peer, "reason", "no HTTP/2 client preface")
		nc.Close()
		return
	}
	c := newConn(tc, raw, lim, true, log)
	c.peer = peer
	c.idleTimeout = srv.IdleTimeout
	c.newStream = func(s *Stream, mh *http2.MetaHeadersFrame) {
		srv.mu.Lock()
		draining := srv.draining
		srv.mu.Unlock()
		if draining {
			// Accepted while draining (it was queued): this stream is
			// served, the client's next ones go elsewhere.
			c.goAway(http2.ErrCodeNo, "draining")
		}
		srv.handleStream(c, s, mh)
	}
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		nc.Close()
		return
	}
	if srv.conns == nil {
		srv.conns = map[*conn]struct{}{}
	}
	srv.conns[c] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.conns, c)
		srv.mu.Unlock()
	}()
	// The handshake deadline also bounds the wait for the client's SETTINGS.
	go func() {
		select {
		case <-c.settingsCh:
			nc.SetDeadline(time.Time{})
		case <-c.done:
		}
	}()
	if err := c.start(); err != nil {
		c.fail(err)
		return
	}
	c.mu.Lock()
	c.maybeIdleLocked()
	c.mu.Unlock()
	c.readLoop()
}

// handleStream runs on the reader goroutine: it checks the request and starts
// the handler; nothing here may block.
func (srv *Server) handleStream(c *conn, s *Stream, mh *http2.MetaHeadersFrame) {
	method := mh.PseudoValue("method")
	authority := mh.PseudoValue("authority")
	status, reason := 0, ""
	var ap netip.AddrPort
	switch {
	case method != http.MethodConnect:
		status, reason = http.StatusMethodNotAllowed, "method is not CONNECT"
	case mh.PseudoValue("protocol") != "":
		// Extended CONNECT (RFC 8441) is not offered.
		status, reason = http.StatusBadRequest, ":protocol not supported"
	default:
		var err error
		if ap, err = ParseAuthority(authority); err != nil {
			status, reason = http.StatusBadRequest, err.Error()
		}
	}
	// :scheme and :path are tolerated on CONNECT: nghttp sends them.
	if status != 0 {
		c.log.Info("hbone: refusing stream", "remote", c.tc.RemoteAddr(), "peer", c.peer, "stream", s.id, "status", status, "reason", reason)
		srv.refuse(c, s, status)
		srv.handlerDone(c)
		if srv.OnStreamDone != nil {
			srv.OnStreamDone(&Request{Peer: c.peer, RemoteAddr: c.tc.RemoteAddr(), StreamID: s.id}, StreamStats{Status: status, Err: errors.New(reason)})
		}
		return
	}
	hdr := make(http.Header, len(mh.RegularFields()))
	for _, f := range mh.RegularFields() {
		k := http.CanonicalHeaderKey(f.Name)
		hdr[k] = append(hdr[k], f.Value)
	}
	req := &Request{Authority: ap, Peer: c.peer, Header: hdr, RemoteAddr: c.tc.RemoteAddr(), StreamID: s.id}
	c.mu.Lock()
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	if s.recvErr != nil {
		s.cancel()
	}
	c.mu.Unlock()
	go srv.runStream(c, s, req)
}

func (srv *Server) handlerDone(c *conn) {
	c.mu.Lock()
	c.handlers--
	c.maybeIdleLocked()
	c.mu.Unlock()
}

// refuse answers status and ends the stream.
func (srv *Server) refuse(c *conn, s *Stream, status int) {
	c.mu.Lock()
	rst := !s.recvEnd && s.recvErr == nil
	// A stream the client already reset gets no answer: it would ignore it.
	answer := !s.rstRecv
	s.sentEnd, s.closed = true, true
	s.writeErr = net.ErrClosed
	if s.recvErr == nil {
		s.recvErr = net.ErrClosed
	}
	s.releaseQueueLocked()
	c.removeLocked(s)
	if answer {
		c.writeHeadersLocked(s.id, statusFields(status), true)
	}
	c.mu.Unlock()
	if rst {
		// The client may still be sending: RFC 9113 8.1 says stop it with NO_ERROR.
		c.queue(func(fr *http2.Framer) { fr.WriteRSTStream(s.id, http2.ErrCodeNo) })
	}
	c.kick()
}

func (srv *Server) runStream(c *conn, s *Stream, req *Request) {
	defer srv.handlerDone(c)
	start := time.Now()
	up, err := srv.Handler(s.ctx, req)
	if err != nil {
		status := http.StatusServiceUnavailable
		var se *StatusError
		if errors.As(err, &se) {
			status = se.Code
		}
		c.log.Info("hbone: refusing stream", "remote", req.RemoteAddr, "peer", req.Peer, "authority", req.Authority, "status", status, "reason", err)
		srv.refuse(c, s, status)
		if srv.OnStreamDone != nil {
			srv.OnStreamDone(req, StreamStats{Status: status, Err: err, Duration: time.Since(start)})
		}
		return
	}
	c.mu.Lock()
	gone := s.recvErr != nil && !s.recvEnd || s.closed
	if !gone {
		c.writeHeadersLocked(s.id, statusFields(http.StatusOK), false)
	}
	c.mu.Unlock()
	if gone {
		up.Close()
		s.Close()
		if srv.OnStreamDone != nil {
			srv.OnStreamDone(req, StreamStats{Duration: time.Since(start), Err: errStreamGone})
		}
		return
	}
	c.kick()
	to, from, err := Relay(s, up)
	if srv.OnStreamDone != nil {
		srv.OnStreamDone(req, StreamStats{ToUpstream: to, FromUpstream: from, Duration: time.Since(start), Status: http.StatusOK, Err: err})
	}
}

// Relay copies between a tunnel and a plain connection until both directions
// end, passing half-closes on; it closes both. It returns the bytes copied from
// s to up and from up to s, and the first error other than a clean end.
func Relay(s *Stream, up net.Conn) (toUp, fromUp int64, err error) {
	var upErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		toUp, upErr = io.Copy(up, s)
		if upErr != nil {
			up.Close()
			s.Close()
			return
		}
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	fromUp, err = io.Copy(s, up)
	if err == nil {
		err = s.CloseWrite()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	} else {
		s.Close()
		up.Close()
	}
	<-done
	s.Close()
	up.Close()
	if err == nil {
		err = upErr
	}
	return toUp, fromUp, err
}

// Close closes the listeners and every connection at once.
func (srv *Server) Close() error {
	srv.mu.Lock()
	srv.closing = true
	for ln := range srv.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(srv.conns))
	for c := range srv.conns {
		conns = append(conns, c)
	}
	srv.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	srv.wg.Wait()
	return nil
}

// Drain sends GOAWAY on every connection, and on each one accepted from
// now on at its first stream, so that clients open their next streams on a
// new connection while the open ones finish. Serve keeps accepting: a
// listener that is no longer the one new connections reach (a tunnel being
// replaced) still empties its accept queue. Shutdown or Close end it.
func (srv *Server) Drain() {
	srv.mu.Lock()
	srv.draining = true
	conns := make([]*conn, 0, len(srv.conns))
	for c := range srv.conns {
		conns = append(conns, c)
	}
	srv.mu.Unlock()
	for _, c := range conns {
		c.goAway(http2.ErrCodeNo, "draining")
	}
}

// Shutdown stops accepting, sends GOAWAY on every connection and waits for
// their streams to finish or ctx to end, then closes what is left.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	srv.closing = true
	for ln := range srv.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(srv.conns))
	for c := range srv.conns {
		conns = append(conns, c)
	}
	srv.mu.Unlock()
	for _, c := range conns {
		c.goAway(http2.ErrCodeNo, "shutdown")
	}
	for _, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			srv.Close()
			return ctx.Err()
		}
	}
	srv.wg.Wait()
	return nil
}
