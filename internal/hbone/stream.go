package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Stream is one tunnel: a CONNECT stream used as a net.Conn. Read and Write
// may run concurrently with each other; CloseWrite sends END_STREAM (a TCP
// FIN's equivalent); Close also resets the stream if the peer is still
// sending. io.Copy to and from a Stream takes the fast paths (WriteTo and
// ReadFrom).
type Stream struct {
	c    *conn
	id   uint32
	cond sync.Cond // L is &c.mu, which guards every field below

	sendWin  int64
	sentEnd  bool
	writeErr error

	recvWin    int64
	recvCredit int64
	recvQ      recvQueue
	recvEnd    bool
	recvErr    error
	rstRecv    bool

	// WriteTo's destination, written to by the reader goroutine while sinkIdle.
	sink     deadlineWriter
	sinkRaw  *rawWriter // sink's descriptor, for writes that must not block
	sinkIdle bool
	sinkN    int64
	sinkErr  error
	draining bool // WriteTo is writing from recvQ without the lock

	gotResponse bool
	status      int

	closed          bool
	readDL, writeDL deadline

	ctx    context.Context // server: cancelled when the stream ends
	cancel context.CancelFunc
	remote net.Addr
}

type deadlineWriter interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

type deadline struct {
	at      time.Time
	timer   *time.Timer
	expired bool
}

var _ net.Conn = (*Stream)(nil)

// abortLocked ends both directions with err (reset or connection failure).
func (s *Stream) abortLocked(err error) {
	if s.recvErr == nil {
		s.recvErr = err
	}
	if s.writeErr == nil {
		s.writeErr = err
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.cond.Broadcast()
}

func (s *Stream) writeErrLocked() error {
	switch {
	case s.closed:
		return net.ErrClosed
	case s.writeErr != nil:
		return s.writeErr
	case s.sentEnd:
		return errors.New("hbone: write after CloseWrite")
	case s.writeDL.expired:
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (s *Stream) readErrLocked() error {
	switch {
	case s.recvEnd:
		return io.EOF
	case s.recvErr != nil:
		return s.recvErr
	case s.closed:
		return net.ErrClosed
	case s.readDL.expired:
		return os.ErrDeadlineExceeded
	}
	return nil
}

// Read reads tunnelled bytes. It returns io.EOF after the peer's END_STREAM.
func (s *Stream) Read(p []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	for s.recvQ.len() == 0 {
		if err := s.readErrLocked(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		s.cond.Wait()
	}
	n := s.recvQ.read(p)
	c.creditLocked(s, int64(n))
	c.mu.Unlock()
	c.kick()
	return n, nil
}

// WriteTo copies the tunnel's bytes to w until END_STREAM. When w is a TCP or
// Unix socket, the connection's reader goroutine writes DATA payloads straight
// to it while nothing is queued (no hand-off, no copy); WriteTo may leave w's
// write deadline reset.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	c := s.c
	var dw deadlineWriter
	switch w := w.(type) {
	case *net.TCPConn:
		dw = w
	case *net.UnixConn:
		dw = w
	}
	var raw *rawWriter
	if dw != nil {
		raw = newRawWriter(dw)
	}
	var total int64
	var bufs net.Buffers
	c.mu.Lock()
	defer func() {
		s.sink, s.sinkRaw, s.sinkIdle = nil, nil, false
		total += s.sinkN
		s.sinkN = 0
		c.mu.Unlock()
		if dw != nil {
			dw.SetWriteDeadline(time.Time{})
		}
	}()
	for {
		if s.recvQ.len() > 0 {
			// Everything queued goes out in one writev: a slow destination
			// is drained in large writes, not chunk by chunk.
			bufs = s.recvQ.buffers(bufs[:0])
			s.sinkIdle = false
			s.draining = true
			c.mu.Unlock()
			if dw != nil {
				// The reader may have left a short deadline behind.
				dw.SetWriteDeadline(time.Time{})
			}
			var n int
			var err error
			if len(bufs) == 1 {
				n, err = w.Write(bufs[0])
			} else {
				nb := bufs
				var n64 int64
				n64, err = nb.WriteTo(w)
				n = int(n64)
			}
			c.mu.Lock()
			s.draining = false
			if s.closed {
				// Close left the queue to us, as bufs pointed into it.
				s.releaseQueueLocked()
				return total, net.ErrClosed
			}
			s.recvQ.discardN(n)
			c.creditLocked(s, int64(n))
			total += int64(n)
			if err != nil {
				s.sinkErr = err
				c.mu.Unlock()
				c.kick()
				c.mu.Lock()
				return total, err
			}
			c.mu.Unlock()
			c.kick()
			c.mu.Lock()
			continue
		}
		if s.sinkErr != nil {
			return total, s.sinkErr
		}
		if err := s.readErrLocked(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		if dw != nil {
			s.sink, s.sinkRaw, s.sinkIdle = dw, raw, true
		}
		s.cond.Wait()
	}
}

// Write sends p as DATA frames, blocking while the peer's windows are closed.
func (s *Stream) Write(p []byte) (int, error) { return s.sendData(nil, p) }

var framePool = sync.Pool{New: func() any {
	b := make([]byte, 9+DefaultMaxFrameSize)
	return &b
}}

// ReadFrom sends everything r yields, reading straight into a frame buffer so
// the payload is never copied on our side of the TLS layer.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	size := int(s.c.lim.MaxFrameSize)
	// Small reads stay in a small buffer; the first read that fills it moves
	// to a whole frame's buffer for the rest of the transfer.
	bp := getFrame(9 + min(size, smallFrameSize))
	defer func() { putFrame(bp) }()
	var total int64
	for {
		buf := *bp
		room := min(size, len(buf)-9)
		n, err := r.Read(buf[9 : 9+room])
		if n > 0 {
			m, werr := s.sendData(buf, buf[9:9+n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if n == room && room < size {
			putFrame(bp)
			if size <= DefaultMaxFrameSize {
				bp = framePool.Get().(*[]byte)
			} else {
				b := make([]byte, 9+size)
				bp = &b
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// CloseWrite sends END_STREAM: the peer reads EOF; we can still read.
func (s *Stream) CloseWrite() error {
	c := s.c
	c.mu.Lock()
	if err := s.writeErrLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	s.sentEnd = true
	if s.recvEnd {
		c.removeLocked(s)
	}
	c.mu.Unlock()
	// Queued as a control frame: it follows every DATA frame already written
	// and needs no window, so CloseWrite never blocks on the peer.
	c.queue(func(fr *http2.Framer) { fr.WriteData(s.id, true, nil) })
	c.kick()
	return nil
}

// Close ends the tunnel: END_STREAM if not yet sent, and RST_STREAM(CANCEL) if
// the peer has not finished sending, so it stops.
func (s *Stream) Close() error {
	c := s.c
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return nil
	}
	sendEnd := !s.sentEnd && s.writeErr == nil
	sendRST := !s.recvEnd && s.recvErr == nil
	s.closed = true
	s.sentEnd = true
	if sendRST {
		s.recvErr = ErrStreamReset
	}
	s.writeErr = net.ErrClosed
	if !s.draining {
		s.releaseQueueLocked()
	}
	for _, d := range []*deadline{&s.readDL, &s.writeDL} {
		if d.timer != nil {
			d.timer.Stop()
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	c.removeLocked(s)
	s.cond.Broadcast()
	c.mu.Unlock()
	if sendEnd || sendRST {
		c.queue(func(fr *http2.Framer) {
			if sendEnd {
				fr.WriteData(s.id, true, nil)
			}
			if sendRST {
				fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
			}
		})
	}
	c.kick()
	return nil
}

// LocalAddr is the local address of the carrying connection.
func (s *Stream) LocalAddr() net.Addr { return s.c.tc.LocalAddr() }

// RemoteAddr is the tunnel's destination on the client side, and the peer's
// address on the server side.
func (s *Stream) RemoteAddr() net.Addr {
	if s.remote != nil {
		return s.remote
	}
	return s.c.tc.RemoteAddr()
}

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read and WriteTo.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.setDeadline(&s.readDL, t) }

// SetWriteDeadline bounds Write and ReadFrom while they wait for window.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.setDeadline(&s.writeDL, t) }

func (s *Stream) setDeadline(d *deadline, t time.Time) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.at, d.expired = t, false
	if t.IsZero() {
		return nil
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.expired = true
		s.cond.Broadcast()
		return nil
	}
	d.timer = time.AfterFunc(wait, func() {
		c.mu.Lock()
		if d.at.Equal(t) {
			d.expired = true
			s.cond.Broadcast()
		}
		c.mu.Unlock()
	})
	return nil
}

// releaseQueueLocked drops bytes that will never be read and gives them back
// to the connection window.
func (s *Stream) releaseQueueLocked() {
	if q := s.recvQ.len(); q > 0 {
		s.c.creditConnLocked(int64(q))
	}
	s.recvQ.reset()
}

// ID is the HTTP/2 stream ID, for logs.
func (s *Stream) ID() uint32 { return s.id }
