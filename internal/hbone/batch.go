package hbone

import (
	"net"
	"sync"
)

// batchConn sits under the tls.Conn. While a batch is open it gathers the TLS
// records that one write produces (a 256 KiB frame is 16 records) and sends
// them with one syscall when the batch ends; outside a batch (alerts, key
// updates) it writes through. This alone saves most of the syscalls of the
// data path.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      *[]byte
}

var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, DefaultMaxFrameSize+DefaultMaxFrameSize/16+4096)
	return &b
}}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		*b.buf = append(*b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.buf = batchPool.Get().(*[]byte)
	b.mu.Unlock()
}

func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	buf := b.buf
	b.buf = nil
	var err error
	if len(*buf) > 0 {
		_, err = b.Conn.Write(*buf)
	}
	*buf = (*buf)[:0]
	if cap(*buf) <= 4<<20 {
		batchPool.Put(buf)
	}
	return err
}
