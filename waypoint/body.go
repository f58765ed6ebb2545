package waypoint

import (
	"errors"
	"io"
	"sync"
)

// replayBody lets a request body be sent again on a retry: it keeps up to
// limit bytes of what attempts read from the client. Each attempt reads
// through its own view; a new view replays what was kept, then goes on
// reading from the client, and the views before it stop working, so two
// attempts never share the client's stream. Once more than limit bytes were
// read, no new view can be made: such a request is not retried.
type replayBody struct {
	mu       sync.Mutex
	src      io.Reader
	buf      []byte
	limit    int
	overflowed bool
	err      error // io.EOF once the client's body ended
	gen      int
}

var errStaleView = errors.New("waypoint: request body taken by a newer attempt")

func newReplayBody(src io.Reader, limit int) *replayBody {
	return &replayBody{src: src, limit: limit}
}

// view returns a reader for the next attempt; false when what was read can
// no longer be replayed.
func (b *replayBody) view() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflowed {
		return nil, false
	}
	b.gen++
	return &bodyView{b: b, gen: b.gen}, true
}

// complete returns the whole body when it was read to its end and kept.
func (b *replayBody) complete() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.err == io.EOF && !b.overflowed
}

type bodyView struct {
	b   *replayBody
	gen int
	off int
}

func (v *bodyView) Read(p []byte) (int, error) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if v.gen != b.gen {
		return 0, errStaleView
	}
	if v.off < len(b.buf) {
		n := copy(p, b.buf[v.off:])
		v.off += n
		return n, nil
	}
	if b.overflowed && v.off != len(b.buf) {
		return 0, errStaleView
	}
	if b.err != nil {
		return 0, b.err
	}
	// The client's next bytes. A retry waits for this read to return.
	n, err := b.src.Read(p)
	if n > 0 {
		if !b.overflowed && len(b.buf)+n <= b.limit {
			b.buf = append(b.buf, p[:n]...)
			v.off += n
		} else {
			b.overflowed = true
			b.buf = nil
			v.off = 0
		}
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// Close leaves the client's body open: a retry may still need it. The
// server closes it when the handler returns.
func (v *bodyView) Close() error { return nil }
