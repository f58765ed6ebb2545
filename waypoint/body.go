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
	// readMu serialises reads from the client; mu guards the rest and is
	// never held across a read, so a retry decision never waits for the
	// client.
	readMu     sync.Mutex
	mu         sync.Mutex
	src        io.Reader
	buf        []byte // the first total bytes, unless overflowed
	total      int
	limit      int
	overflowed bool
	err        error // the client's body ended (io.EOF) or failed
	gen        int
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

// overflow reports whether the body can no longer be replayed.
func (b *replayBody) overflow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.overflowed
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
	off int // position in the body
}

func (v *bodyView) Read(p []byte) (int, error) {
	b := v.b
	for {
		b.mu.Lock()
		switch {
		case v.gen != b.gen:
			b.mu.Unlock()
			return 0, errStaleView
		case v.off < len(b.buf):
			n := copy(p, b.buf[v.off:])
			v.off += n
			b.mu.Unlock()
			return n, nil
		case v.off != b.total:
			// Bytes this view has not seen were dropped (overflow).
			b.mu.Unlock()
			return 0, errStaleView
		case b.err != nil:
			b.mu.Unlock()
			return 0, b.err
		}
		b.mu.Unlock()

		b.readMu.Lock()
		b.mu.Lock()
		if v.gen != b.gen || v.off != b.total || b.err != nil {
			// Another view read meanwhile: look again.
			b.mu.Unlock()
			b.readMu.Unlock()
			continue
		}
		b.mu.Unlock()
		n, err := b.src.Read(p)
		b.mu.Lock()
		if n > 0 {
			if !b.overflowed && len(b.buf)+n <= b.limit {
				b.buf = append(b.buf, p[:n]...)
			} else {
				b.overflowed, b.buf = true, nil
			}
			b.total += n
		}
		if err != nil {
			b.err = err
		}
		stale := v.gen != b.gen
		if !stale {
			v.off += n
		}
		b.mu.Unlock()
		b.readMu.Unlock()
		if stale {
			// What was read stays kept for the newer view.
			return 0, errStaleView
		}
		return n, err
	}
}

// Close leaves the client's body open: a retry may still need it. The
// server closes it when the handler returns.
func (v *bodyView) Close() error { return nil }
