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
	b := make([]byte, 0, largeBatchCap)
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

// begin opens a batch for about n bytes of plaintext.
func (b *batchConn) begin(n int) {
	b.mu.Lock()
	b.batching = true
	b.buf = getBatch(n + n/16 + 512)
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
	putBatch(buf)
	return err
}
