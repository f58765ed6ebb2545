package hbone

import "sync"

// Pooled buffers come in two size classes, so that a request of a few KiB
// does not pin a 256 KiB buffer: small is what one TLS record carries, large
// is a whole DATA frame of DefaultMaxFrameSize. Bulk transfers move to the
// large class when a small buffer comes back full.
const smallFrameSize = 16 << 10

var smallFramePool = sync.Pool{New: func() any {
	b := make([]byte, 9+smallFrameSize)
	return &b
}}

// getFrame returns a pooled buffer of the smallest class whose length is at
// least n, or of the large class if n is larger still (callers check).
func getFrame(n int) *[]byte {
	if n <= 9+smallFrameSize {
		return smallFramePool.Get().(*[]byte)
	}
	return framePool.Get().(*[]byte)
}

// putFrame returns a buffer from getFrame; any other buffer is dropped.
func putFrame(bp *[]byte) {
	switch cap(*bp) {
	case 9 + smallFrameSize:
		*bp = (*bp)[:cap(*bp)]
		smallFramePool.Put(bp)
	case 9 + DefaultMaxFrameSize:
		*bp = (*bp)[:cap(*bp)]
		framePool.Put(bp)
	}
}

// Batch buffers hold the TLS records of one write: the payload plus about
// 1/16 for record overhead, plus control frames.
const (
	smallBatchCap = 2*smallFrameSize + 4096
	largeBatchCap = DefaultMaxFrameSize + DefaultMaxFrameSize/16 + 4096
	maxBatchCap   = 4 << 20
)

var smallBatchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, smallBatchCap)
	return &b
}}

// getBatch returns an empty pooled buffer for about n bytes of records.
func getBatch(n int) *[]byte {
	if n <= smallBatchCap {
		return smallBatchPool.Get().(*[]byte)
	}
	return batchPool.Get().(*[]byte)
}

// putBatch returns a buffer to the class its capacity (grown or not) fits.
func putBatch(bp *[]byte) {
	*bp = (*bp)[:0]
	switch c := cap(*bp); {
	case c > maxBatchCap:
	case c >= largeBatchCap:
		batchPool.Put(bp)
	case c >= smallBatchCap:
		smallBatchPool.Put(bp)
	}
}
