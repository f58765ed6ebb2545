package hbone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/warrenmesh/warren/internal/identity"
)

// Errors a stream or connection reports.
var (
	ErrStreamReset = errors.New("hbone: stream reset")
	ErrConnClosed  = errors.New("hbone: connection closed")
	// ErrRefused means the server did not process the stream (GOAWAY or stream
	// limit): the request may be retried on another connection.
	ErrRefused = errors.New("hbone: stream refused")
)

// maxCtlBacklog bounds the control frames (acks, window updates, resets)
// waiting for a peer that does not read: past it the peer is flooding us.
const maxCtlBacklog = 1 << 20

// maxRefusedPerConn: a peer that keeps opening streams beyond the limit, or
// resetting them as fast as it opens them, is dropped.
const maxRefusedPerConn = 1000

// conn is one HTTP/2 connection, client or server side. One reader goroutine
// (readLoop) owns the read half; writes are serialised by wmu; control frames
// are queued under ctlMu and flushed by whoever holds wmu next, so the reader
// never blocks on a peer that is not reading (which would deadlock two peers
// that both send).
type conn struct {
	tc       net.Conn // the *tls.Conn; tests may run on raw alone
	raw      *batchConn
	log      *slog.Logger
	lim      Limits
	isServer bool
	peer     identity.ID

	fr *http2.Framer // reads only; owned by readLoop

	ctlMu      sync.Mutex
	ctlBuf     bytes.Buffer
	ctlFr      *http2.Framer // writes into ctlBuf
	henc       *hpack.Encoder
	hbuf       bytes.Buffer
	ctlFlusher atomic.Bool

	wmu sync.Mutex

	mu             sync.Mutex
	streams        map[uint32]*Stream
	nextID         uint32 // client: next stream ID
	lastPeerID     uint32 // server: highest stream ID the peer opened
	sendWin        int64  // connection send window
	recvWin        int64  // connection receive window left for the peer
	recvCredit     int64  // consumed, not yet returned to the peer
	peerInitWin    int64
	peerMaxFrame   uint32
	peerMaxStreams uint32
	active         int // open streams counted against the limit
	handlers       int // server: handler goroutines still running
	reserved       int // client: streams promised to Dial callers
	refused        int
	goingAway      bool // we or the peer sent GOAWAY: no new streams
	closeWhenIdle  bool // a graceful GOAWAY: close once the last stream ends
	goAwayLastID   uint32
	sawSettings    bool
	err            error
	idleTimer      *time.Timer
	idleTimeout    time.Duration

	settingsCh chan struct{} // closed at the peer's first SETTINGS
	done       chan struct{} // closed when the connection is gone
	ctx        context.Context
	cancel     context.CancelFunc

	// server only
	newStream func(s *Stream, mh *http2.MetaHeadersFrame)
}

func newConn(tc net.Conn, raw *batchConn, lim Limits, isServer bool, log *slog.Logger) *conn {
	c := &conn{
		tc:             tc,
		raw:            raw,
		lim:            lim,
		isServer:       isServer,
		log:            log,
		streams:        make(map[uint32]*Stream),
		nextID:         1,
		sendWin:        65535,
		recvWin:        65535,
		peerInitWin:    65535,
		peerMaxFrame:   16384,
		peerMaxStreams: 1<<31 - 1,
		settingsCh:     make(chan struct{}),
		done:           make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.fr = http2.NewFramer(nil, tc)
	c.fr.SetMaxReadFrameSize(lim.MaxFrameSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = lim.MaxHeaderListSize
	c.ctlFr = http2.NewFramer(&c.ctlBuf, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start queues our preface, SETTINGS and connection window.
func (c *conn) start() error {
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: c.lim.StreamWindow},
		{ID: http2.SettingMaxFrameSize, Val: c.lim.MaxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: c.lim.MaxHeaderListSize},
	}
	if c.isServer {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.lim.MaxConcurrentStreams})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 0})
	}
	c.ctlMu.Lock()
	if !c.isServer {
		c.ctlBuf.WriteString(http2.ClientPreface)
	}
	c.ctlFr.WriteSettings(settings...)
	if inc := int64(c.lim.ConnWindow) - 65535; inc > 0 {
		c.ctlFr.WriteWindowUpdate(0, uint32(inc))
	}
	c.ctlMu.Unlock()
	c.mu.Lock()
	c.recvWin = int64(c.lim.ConnWindow)
	c.mu.Unlock()
	return c.flush()
}

// flush writes the queued control frames now.
func (c *conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(nil)
}

// writeLocked sends queued control frames, then frame (a whole frame, header
// included) if any, in one batch: one syscall. Callers hold wmu.
func (c *conn) writeLocked(frame []byte) error {
	c.ctlMu.Lock()
	var ctl *[]byte
	if c.ctlBuf.Len() > 0 {
		ctl = getBatch(c.ctlBuf.Len())
		*ctl = append((*ctl)[:0], c.ctlBuf.Bytes()...)
		c.ctlBuf.Reset()
	}
	c.ctlMu.Unlock()
	if ctl == nil && frame == nil {
		return nil
	}
	n := len(frame)
	if ctl != nil {
		n += len(*ctl)
	}
	c.raw.begin(n)
	var err error
	if ctl != nil {
		_, err = c.tc.Write(*ctl)
		putBatch(ctl)
	}
	if err == nil && frame != nil {
		_, err = c.tc.Write(frame)
	}
	if err2 := c.raw.end(); err == nil {
		err = err2
	}
	if err != nil {
		c.fail(fmt.Errorf("write: %w", err))
	}
	return err
}

// kick gets queued control frames on the wire without blocking: if another
// goroutine holds wmu it will not notice them, so a short-lived flusher waits
// for the lock instead of the caller.
func (c *conn) kick() {
	if c.wmu.TryLock() {
		c.writeLocked(nil)
		c.wmu.Unlock()
		return
	}
	if c.ctlFlusher.CompareAndSwap(false, true) {
		go func() {
			c.wmu.Lock()
			// Reset before taking the queue: anything queued after this point
			// starts another flusher if we are still holding wmu.
			c.ctlFlusher.Store(false)
			c.writeLocked(nil)
			c.wmu.Unlock()
		}()
	}
}

// queue runs f with the control framer and reports whether the backlog is
// still sane.
func (c *conn) queue(f func(fr *http2.Framer)) {
	c.ctlMu.Lock()
	f(c.ctlFr)
	over := c.ctlBuf.Len() > maxCtlBacklog
	c.ctlMu.Unlock()
	if over {
		// Callers may hold c.mu, which fail takes.
		go c.fail(errors.New("control frame backlog exceeded: peer is not reading"))
	}
}

// writeHeaders queues a header block, split into CONTINUATION frames as the
// peer's frame size requires. hpack state is shared by all streams, so encoding
// and queueing happen under one lock, in wire order.
func (c *conn) writeHeaders(id uint32, fields []hpack.HeaderField, endStream bool) {
	c.mu.Lock()
	c.writeHeadersLocked(id, fields, endStream)
	c.mu.Unlock()
	c.kick()
}

// writeHeadersLocked is writeHeaders for callers holding c.mu, which lets a
// client allocate a stream ID and queue its HEADERS atomically: IDs must reach
// the wire in increasing order. The caller kicks.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, endStream bool) {
	maxFrame := int(c.peerMaxFrame)
	c.queue(func(fr *http2.Framer) {
		c.hbuf.Reset()
		for _, f := range fields {
			c.henc.WriteField(f)
		}
		block := c.hbuf.Bytes()
		first := true
		for first || len(block) > 0 {
			n := min(len(block), maxFrame)
			frag := block[:n]
			block = block[n:]
			if first {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: len(block) == 0})
				first = false
			} else {
				fr.WriteContinuation(id, len(block) == 0, frag)
			}
		}
	})
}

func (c *conn) writeRST(id uint32, code http2.ErrCode) {
	c.queue(func(fr *http2.Framer) { fr.WriteRSTStream(id, code) })
	c.kick()
}

// goAway tells the peer to open no more streams; the connection closes when
// the open ones finish (or at once for an error).
func (c *conn) goAway(code http2.ErrCode, reason string) {
	c.mu.Lock()
	last := c.lastPeerID
	first := !c.goingAway
	c.goingAway = true
	c.mu.Unlock()
	if first || code != http2.ErrCodeNo {
		var debug []byte
		if code != http2.ErrCodeNo {
			debug = []byte(reason)
		}
		c.queue(func(fr *http2.Framer) { fr.WriteGoAway(last, code, debug) })
	}
	if code != http2.ErrCodeNo {
		c.log.Warn("hbone: closing connection", "remote", c.tc.RemoteAddr(), "peer", c.peer, "code", code, "reason", reason)
		// Best effort: the peer should learn why, but a peer that does not read
		// must not hold us.
		c.raw.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.flush()
		c.failLinger(fmt.Errorf("%w: %s: %s", ErrConnClosed, code, reason))
		return
	}
	c.kick()
	c.mu.Lock()
	c.closeWhenIdle = true
	c.maybeIdleLocked()
	c.mu.Unlock()
}

// fail tears the connection down: every stream sees err.
func (c *conn) fail(err error) { c.teardown(err, false) }

// failLinger is fail for a connection we just sent GOAWAY on: closing a
// socket with unread input sends a TCP RST, which can destroy the GOAWAY
// before the peer reads it. So we send FIN and discard input for a moment.
func (c *conn) failLinger(err error) { c.teardown(err, true) }

func (c *conn) teardown(err error, linger bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.log.Debug("hbone: connection closed", "remote", c.tc.RemoteAddr(), "peer", c.peer, "reason", err)
	c.err = err
	c.goingAway = true
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	c.active = 0
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	for _, s := range streams {
		s.abortLocked(err)
	}
	c.mu.Unlock()
	c.cancel()
	if cw, ok := c.raw.Conn.(interface{ CloseWrite() error }); linger && ok {
		cw.CloseWrite()
		go func() {
			c.raw.Conn.SetReadDeadline(time.Now().Add(time.Second))
			io.Copy(io.Discard, io.LimitReader(c.raw.Conn, 4<<20))
			c.raw.Conn.Close()
		}()
	} else {
		c.raw.Conn.Close()
	}
	close(c.done)
}

// Close closes the connection at once.
func (c *conn) close() { c.fail(ErrConnClosed) }

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// maybeIdleLocked arms the idle timer when no stream is open, and closes a
// connection that is going away once its last stream is done.
func (c *conn) maybeIdleLocked() {
	if c.active > 0 || c.handlers > 0 || c.reserved > 0 || c.err != nil {
		return
	}
	if c.closeWhenIdle {
		go c.close()
		return
	}
	if c.goingAway {
		return
	}
	if c.idleTimeout <= 0 {
		return
	}
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(c.idleTimeout, c.idleFired)
	} else {
		c.idleTimer.Reset(c.idleTimeout)
	}
}

func (c *conn) idleFired() {
	c.mu.Lock()
	idle := c.active == 0 && c.handlers == 0 && c.reserved == 0
	c.mu.Unlock()
	if idle {
		c.log.Debug("hbone: closing idle connection", "remote", c.tc.RemoteAddr(), "peer", c.peer)
		c.goAway(http2.ErrCodeNo, "idle")
	}
}

// readLoop is the connection's only reader. It returns when the connection
// fails; its error has already been logged or sent.
func (c *conn) readLoop() {
	defer c.fail(ErrConnClosed)
	for {
		fh, err := c.fr.ReadFrameHeader()
		var f http2.Frame
		if err == nil && fh.Type == http2.FrameData {
			// DATA bypasses the Framer so that its payload lands in a pooled
			// buffer: an idle connection then holds no frame-sized buffer.
			if err = c.readData(fh); err == nil {
				continue
			}
			var ce connErr
			if errors.As(err, &ce) {
				c.goAway(ce.code, ce.reason)
				return
			}
		} else if err == nil {
			f, err = c.fr.ReadFrameForHeader(fh)
		}
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				c.streamError(se)
				continue
			case errors.As(err, &ce):
				detail := "frame error"
				if d := c.fr.ErrorDetail(); d != nil {
					detail = d.Error()
				}
				c.goAway(http2.ErrCode(ce), detail)
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.goAway(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				c.fail(fmt.Errorf("%w: %v", ErrConnClosed, err))
			default:
				if !c.closed() {
					c.log.Debug("hbone: read failed", "remote", c.tc.RemoteAddr(), "err", err)
				}
				c.fail(fmt.Errorf("%w: read: %v", ErrConnClosed, err))
			}
			return
		}
		if err := c.handleFrame(f); err != nil {
			var ce connErr
			if errors.As(err, &ce) {
				c.goAway(ce.code, ce.reason)
			} else {
				c.fail(err)
			}
			return
		}
	}
}

type connErr struct {
	code   http2.ErrCode
	reason string
}

func (e connErr) Error() string { return fmt.Sprintf("%s: %s", e.code, e.reason) }

func protoErr(format string, args ...any) error {
	return connErr{http2.ErrCodeProtocol, fmt.Sprintf(format, args...)}
}

// resetLocked resets a stream the peer misused, with a logged reason. The
// caller kicks.
func (c *conn) resetLocked(s *Stream, code http2.ErrCode, reason string) {
	c.log.Warn("hbone: resetting stream", "remote", c.tc.RemoteAddr(), "peer", c.peer, "stream", s.id, "code", code, "reason", reason)
	s.abortLocked(fmt.Errorf("%w: %s: %s", ErrStreamReset, code, reason))
	c.removeLocked(s)
	id := s.id
	c.queue(func(fr *http2.Framer) { fr.WriteRSTStream(id, code) })
}

func (c *conn) streamError(se http2.StreamError) {
	reason := "malformed stream"
	if se.Cause != nil {
		reason = se.Cause.Error()
	}
	c.log.Warn("hbone: resetting stream", "remote", c.tc.RemoteAddr(), "peer", c.peer, "stream", se.StreamID, "code", se.Code, "reason", reason)
	c.mu.Lock()
	if c.isServer && se.StreamID > c.lastPeerID && se.StreamID%2 == 1 {
		c.lastPeerID = se.StreamID
	}
	s := c.streams[se.StreamID]
	if s != nil {
		s.abortLocked(fmt.Errorf("%w: %v", ErrStreamReset, se))
		c.removeLocked(s)
	}
	c.mu.Unlock()
	c.writeRST(se.StreamID, se.Code)
}

func (c *conn) handleFrame(f http2.Frame) error {
	if !c.sawSettings {
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			return protoErr("first frame is %v, not SETTINGS", f.Header().Type)
		}
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.onRST(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.queue(func(fr *http2.Framer) { fr.WritePing(true, data) })
			c.kick()
		}
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return protoErr("PUSH_PROMISE not allowed")
	case *http2.PriorityFrame, *http2.UnknownFrame:
		// Priorities mean nothing to a tunnel; unknown frame types must be ignored.
	case *http2.ContinuationFrame:
		return protoErr("stray CONTINUATION")
	}
	return nil
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	var err error
	f.ForeachSetting(func(s http2.Setting) error {
		if e := s.Valid(); e != nil {
			err = connErr{http2.ErrCode(e.(http2.ConnectionError)), "invalid setting " + s.String()}
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > 1<<31-1 {
					err = connErr{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window"}
					return err
				}
				st.cond.Broadcast()
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		case http2.SettingHeaderTableSize:
			c.ctlMu.Lock()
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.ctlMu.Unlock()
		case http2.SettingEnablePush:
			if !c.isServer && s.Val != 0 {
				err = protoErr("server sent ENABLE_PUSH")
				return err
			}
		}
		return nil
	})
	first := !c.sawSettings
	c.sawSettings = true
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.queue(func(fr *http2.Framer) { fr.WriteSettingsAck() })
	c.kick()
	if first {
		close(c.settingsCh)
	}
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if inc == 0 {
			return protoErr("WINDOW_UPDATE of 0 on the connection")
		}
		c.sendWin += inc
		if c.sendWin > 1<<31-1 {
			return connErr{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		for _, s := range c.streams {
			s.cond.Broadcast()
		}
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if c.isIdleLocked(f.StreamID) {
			return protoErr("WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		return nil
	}
	if inc == 0 {
		c.resetLocked(s, http2.ErrCodeProtocol, "zero WINDOW_UPDATE")
		go c.kick()
		return nil
	}
	s.sendWin += inc
	if s.sendWin > 1<<31-1 {
		c.resetLocked(s, http2.ErrCodeFlowControl, "stream window overflow")
		go c.kick()
		return nil
	}
	s.cond.Broadcast()
	return nil
}

// isIdleLocked reports whether id names a stream that was never opened.
func (c *conn) isIdleLocked(id uint32) bool {
	if c.isServer {
		return id%2 == 1 && id > c.lastPeerID
	}
	return id%2 == 1 && id >= c.nextID || id%2 == 0
}

func (c *conn) onRST(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if c.isIdleLocked(f.StreamID) {
			return protoErr("RST_STREAM on idle stream %d", f.StreamID)
		}
		return nil
	}
	err := fmt.Errorf("%w: peer sent %v", ErrStreamReset, f.ErrCode)
	if f.ErrCode == http2.ErrCodeRefusedStream {
		err = fmt.Errorf("%w: peer sent REFUSED_STREAM", ErrRefused)
	}
	s.abortLocked(err)
	s.rstRecv = true
	c.removeLocked(s)
	if c.isServer {
		c.refused++ // counts toward rapid-reset detection
		if c.refused > maxRefusedPerConn && c.handlers > int(c.lim.MaxConcurrentStreams) {
			return connErr{http2.ErrCodeEnhanceYourCalm, "too many streams reset while their handlers run"}
		}
	}
	return nil
}

func (c *conn) onGoAway(f *http2.GoAwayFrame) {
	if f.ErrCode != http2.ErrCodeNo {
		c.log.Warn("hbone: peer sent GOAWAY", "remote", c.tc.RemoteAddr(), "peer", c.peer, "code", f.ErrCode, "debug", string(f.DebugData()))
	}
	c.mu.Lock()
	c.goingAway = true
	c.closeWhenIdle = true
	c.goAwayLastID = f.LastStreamID
	for id, s := range c.streams {
		if !c.isServer && id > f.LastStreamID {
			s.abortLocked(fmt.Errorf("%w: GOAWAY", ErrRefused))
			c.removeLocked(s)
		}
	}
	c.maybeIdleLocked()
	c.mu.Unlock()
}

func (c *conn) onHeaders(mh *http2.MetaHeadersFrame) error {
	id := mh.StreamID
	if c.isServer {
		c.mu.Lock()
		if c.err != nil {
			// Torn down by a writer while we were reading this frame: a
			// stream opened now would never be aborted.
			err := c.err
			c.mu.Unlock()
			return err
		}
		if s := c.streams[id]; s != nil {
			// Trailers on a tunnel: treat as the end of the client's data.
			c.mu.Unlock()
			if !mh.StreamEnded() {
				return protoErr("HEADERS without END_STREAM on open stream %d", id)
			}
			c.endRecv(s)
			return nil
		}
		if id%2 == 0 || id <= c.lastPeerID {
			c.mu.Unlock()
			return protoErr("HEADERS on stream %d, not a new client stream", id)
		}
		c.lastPeerID = id
		if mh.Truncated {
			c.mu.Unlock()
			c.log.Warn("hbone: refusing stream", "remote", c.tc.RemoteAddr(), "peer", c.peer, "stream", id, "reason", "header list too large")
			c.writeHeaders(id, statusFields(431), true)
			return nil
		}
		if c.goingAway || c.active >= int(c.lim.MaxConcurrentStreams) || c.handlers >= 2*int(c.lim.MaxConcurrentStreams) {
			c.refused++
			n := c.refused
			c.mu.Unlock()
			c.writeRST(id, http2.ErrCodeRefusedStream)
			if n > maxRefusedPerConn {
				return connErr{http2.ErrCodeEnhanceYourCalm, "too many refused streams"}
			}
			return nil
		}
		s := c.newStreamLocked(id)
		c.handlers++
		c.mu.Unlock()
		if mh.StreamEnded() {
			c.endRecv(s)
		}
		c.newStream(s, mh)
		return nil
	}
	// Client: a response.
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		idle := c.isIdleLocked(id)
		c.mu.Unlock()
		if idle {
			return protoErr("HEADERS on idle stream %d", id)
		}
		return nil
	}
	if s.gotResponse {
		c.mu.Unlock()
		if mh.StreamEnded() {
			c.endRecv(s)
		}
		return nil
	}
	status := mh.PseudoValue("status")
	code, digits := 0, len(status) == 3
	for _, ch := range []byte(status) {
		digits = digits && ch >= '0' && ch <= '9'
		code = code*10 + int(ch-'0')
	}
	if !digits || code < 100 {
		c.mu.Unlock()
		c.streamError(http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: fmt.Errorf("bad :status %q", status)})
		return nil
	}
	if code < 200 {
		c.mu.Unlock()
		return nil // informational: wait for the final response
	}
	s.gotResponse = true
	s.status = code
	s.cond.Broadcast()
	c.mu.Unlock()
	if mh.StreamEnded() {
		c.endRecv(s)
	}
	return nil
}

func (c *conn) newStreamLocked(id uint32) *Stream {
	s := &Stream{c: c, id: id, sendWin: c.peerInitWin, recvWin: int64(c.lim.StreamWindow)}
	s.cond.L = &c.mu
	c.streams[id] = s
	c.active++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return s
}

// removeLocked forgets a stream that is closed both ways (or reset).
func (c *conn) removeLocked(s *Stream) {
	if c.streams[s.id] != s {
		return
	}
	delete(c.streams, s.id)
	c.active--
	// Bytes still queued stay charged to the connection window until they are
	// read or the stream is closed, so a peer cannot pile up reset streams.
	c.maybeIdleLocked()
}

func (c *conn) endRecv(s *Stream) {
	c.mu.Lock()
	s.recvEnd = true
	s.cond.Broadcast()
	if s.sentEnd {
		c.removeLocked(s)
	}
	c.mu.Unlock()
}

// readData reads the payload of a DATA frame whose header was read.
func (c *conn) readData(fh http2.FrameHeader) error {
	if !c.sawSettings {
		return protoErr("first frame is DATA, not SETTINGS")
	}
	if fh.StreamID == 0 {
		return protoErr("DATA on stream 0")
	}
	bp := getFrame(int(fh.Length))
	defer putFrame(bp)
	buf := *bp
	if int(fh.Length) > len(buf) {
		buf = make([]byte, fh.Length)
	}
	p := buf[:fh.Length]
	if _, err := io.ReadFull(c.tc, p); err != nil {
		return err
	}
	data := p
	if fh.Flags.Has(http2.FlagDataPadded) {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return protoErr("DATA padding longer than its payload")
		}
		data = p[1 : len(p)-int(p[0])]
	}
	return c.onData(fh.StreamID, int64(fh.Length), data, fh.Flags.Has(http2.FlagDataEndStream))
}

// onData accounts for and delivers a DATA payload; n is the frame length,
// padding included, as flow control counts it.
func (c *conn) onData(id uint32, n int64, data []byte, endStream bool) error {
	c.mu.Lock()
	if n > c.recvWin {
		c.mu.Unlock()
		return connErr{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	c.recvWin -= n
	s := c.streams[id]
	if s == nil || s.recvEnd || s.recvErr != nil || s.sinkErr != nil {
		c.creditConnLocked(n)
		idle := s == nil && c.isIdleLocked(id)
		closedStream := s != nil && s.recvEnd
		c.mu.Unlock()
		switch {
		case idle:
			return protoErr("DATA on idle stream %d", id)
		case closedStream:
			c.writeRST(id, http2.ErrCodeStreamClosed)
		case s == nil:
			// Recently reset or finished: RFC 9113 5.4.2 lets us answer with
			// STREAM_CLOSED; we already forgot the stream, so stay quiet.
		}
		c.kick()
		return nil
	}
	if n > s.recvWin {
		c.creditConnLocked(n)
		c.resetLocked(s, http2.ErrCodeFlowControl, "DATA beyond the stream window")
		c.mu.Unlock()
		c.kick()
		return nil
	}
	s.recvWin -= n
	if pad := n - int64(len(data)); pad > 0 {
		c.creditLocked(s, pad)
	}
	if len(data) > 0 {
		if s.sinkIdle && s.recvQ.len() == 0 {
			c.directWriteLocked(s, data)
		} else {
			s.recvQ.write(data)
			s.cond.Broadcast()
		}
	}
	c.mu.Unlock()
	if endStream {
		c.endRecv(s)
	}
	c.kick()
	return nil
}

// directWriteTimeout bounds how long the reader may block on one stream's
// destination before it queues the rest and moves on, so one slow destination
// cannot stall the other streams of the connection.
const directWriteTimeout = 2 * time.Millisecond

// directWriteLocked writes a DATA payload straight to the stream's sink (set by
// WriteTo) from the reader goroutine. Called with c.mu held; drops it for the
// write.
func (c *conn) directWriteLocked(s *Stream, data []byte) {
	s.sinkIdle = false
	w, raw := s.sink, s.sinkRaw
	c.mu.Unlock()
	// First what the socket takes without blocking, with no deadline to arm;
	// only a destination that would block (or an error, which the ordinary
	// write reports again) costs a deadline.
	var n int
	var err error
	done := false
	if raw != nil {
		n, done = raw.try(data)
	}
	if !done {
		w.SetWriteDeadline(time.Now().Add(directWriteTimeout))
		var m int
		m, err = w.Write(data[n:])
		n += m
		if raw != nil {
			// The next try must not meet this deadline expired.
			w.SetWriteDeadline(time.Time{})
		}
	}
	c.mu.Lock()
	if n > 0 {
		c.creditLocked(s, int64(n))
		s.sinkN += int64(n)
	}
	switch {
	case err != nil && !isTimeout(err):
		s.sinkErr = err
		c.creditConnLocked(int64(len(data) - n))
		s.cond.Broadcast()
	case n < len(data):
		// The destination is slow: the WriteTo goroutine takes over from the queue.
		s.recvQ.write(data[n:])
		s.cond.Broadcast()
	default:
		s.sinkIdle = true
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// creditLocked returns consumed bytes to the peer's windows, in batches: a
// WINDOW_UPDATE per quarter window keeps the pipe full without a frame per read.
func (c *conn) creditLocked(s *Stream, n int64) {
	c.creditConnLocked(n)
	if s.recvEnd || s.recvErr != nil {
		return
	}
	s.recvCredit += n
	if s.recvCredit >= int64(c.lim.StreamWindow)/4 {
		inc := s.recvCredit
		s.recvCredit = 0
		s.recvWin += inc
		id := s.id
		c.queue(func(fr *http2.Framer) { fr.WriteWindowUpdate(id, uint32(inc)) })
	}
}

func (c *conn) creditConnLocked(n int64) {
	c.recvCredit += n
	if c.recvCredit >= int64(c.lim.ConnWindow)/4 {
		inc := c.recvCredit
		c.recvCredit = 0
		c.recvWin += inc
		c.queue(func(fr *http2.Framer) { fr.WriteWindowUpdate(0, uint32(inc)) })
	}
}

// sendData sends payload as DATA frames within the flow-control windows. If
// frame is non-nil, payload is frame[9:] and the first frame is sent in place
// (no copy); otherwise frames are copied into pooled buffers.
func (s *Stream) sendData(frame, payload []byte) (int, error) {
	c := s.c
	sent := 0
	for len(payload) > 0 {
		c.mu.Lock()
		for {
			if err := s.writeErrLocked(); err != nil {
				c.mu.Unlock()
				return sent, err
			}
			if s.sendWin > 0 && c.sendWin > 0 {
				break
			}
			s.cond.Wait()
		}
		n := min(int64(len(payload)), s.sendWin, c.sendWin, int64(c.peerMaxFrame), int64(c.lim.MaxFrameSize))
		s.sendWin -= n
		c.sendWin -= n
		c.mu.Unlock()

		var buf []byte
		var bp *[]byte
		if frame != nil && sent == 0 {
			buf = frame[:9+n]
		} else {
			// Copied into a pooled buffer rather than one per connection, so
			// idle connections hold none.
			bp = getFrame(int(9 + n))
			if cap(*bp) < int(9+n) {
				b := make([]byte, 9+n)
				bp = &b
			}
			buf = (*bp)[:9+n]
			copy(buf[9:], payload[:n])
		}
		putFrameHeader(buf, uint32(n), http2.FrameData, 0, s.id)
		c.wmu.Lock()
		err := c.writeLocked(buf)
		c.wmu.Unlock()
		if bp != nil {
			putFrame(bp)
		}
		if err != nil {
			return sent, fmt.Errorf("hbone: write: %w", err)
		}
		sent += int(n)
		payload = payload[n:]
	}
	return sent, nil
}

func putFrameHeader(b []byte, length uint32, t http2.FrameType, f http2.Flags, id uint32) {
	b[0], b[1], b[2] = byte(length>>16), byte(length>>8), byte(length)
	b[3] = byte(t)
	b[4] = byte(f)
	b[5], b[6], b[7], b[8] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
}

// statusFields is a response header block.
func statusFields(code int) []hpack.HeaderField {
	return []hpack.HeaderField{{Name: ":status", Value: fmt.Sprint(code)}}
}
