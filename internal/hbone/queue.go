package hbone

import (
	"net"
	"sync"
)

// chunkSize is the unit in which received bytes wait for a slow reader. Chunks
// come from a pool and go back as soon as they are read, so an idle stream
// holds no buffer.
const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, chunkSize)
	return &b
}}

// recvQueue holds bytes received for a stream and not yet consumed. Its length
// never exceeds the stream's receive window.
type recvQueue struct {
	chunks []*[]byte
	head   int // read offset in chunks[0]
	tail   int // write offset in the last chunk
	n      int
}

func (q *recvQueue) len() int { return q.n }

func (q *recvQueue) write(p []byte) {
	for len(p) > 0 {
		if len(q.chunks) == 0 || q.tail == chunkSize {
			q.chunks = append(q.chunks, chunkPool.Get().(*[]byte))
			q.tail = 0
		}
		last := *q.chunks[len(q.chunks)-1]
		m := copy(last[q.tail:], p)
		q.tail += m
		q.n += m
		p = p[m:]
	}
}

// peek returns the first contiguous run of queued bytes.
func (q *recvQueue) peek() []byte {
	if q.n == 0 {
		return nil
	}
	end := chunkSize
	if len(q.chunks) == 1 {
		end = q.tail
	}
	return (*q.chunks[0])[q.head:end]
}

func (q *recvQueue) discard(m int) {
	q.n -= m
	q.head += m
	if len(q.chunks) == 1 && q.head == q.tail || q.head == chunkSize {
		chunkPool.Put(q.chunks[0])
		q.chunks[0] = nil
		q.chunks = q.chunks[1:]
		q.head = 0
		if len(q.chunks) == 0 {
			q.chunks = nil
			q.tail = 0
		}
	}
}

func (q *recvQueue) read(p []byte) int {
	total := 0
	for len(p) > 0 && q.n > 0 {
		m := copy(p, q.peek())
		q.discard(m)
		p = p[m:]
		total += m
	}
	return total
}

func (q *recvQueue) reset() {
	for _, c := range q.chunks {
		chunkPool.Put(c)
	}
	*q = recvQueue{}
}

// buffers appends every queued run of bytes to bufs, for a vectored write.
func (q *recvQueue) buffers(bufs net.Buffers) net.Buffers {
	for i, c := range q.chunks {
		start, end := 0, chunkSize
		if i == 0 {
			start = q.head
		}
		if i == len(q.chunks)-1 {
			end = q.tail
		}
		if end > start {
			bufs = append(bufs, (*c)[start:end])
		}
	}
	return bufs
}

// discardN drops m queued bytes, across chunks.
func (q *recvQueue) discardN(m int) {
	for m > 0 {
		k := min(m, len(q.peek()))
		q.discard(k)
		m -= k
	}
}
