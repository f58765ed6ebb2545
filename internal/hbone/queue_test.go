package hbone

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestRecvQueue(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var q recvQueue
	var want bytes.Buffer
	for i := range 400 {
		switch r.IntN(3) {
		case 0, 1:
			p := make([]byte, r.IntN(3*chunkSize))
			for j := range p {
				p[j] = byte(i + j)
			}
			q.write(p)
			want.Write(p)
		case 2:
			if r.IntN(2) == 0 {
				got := make([]byte, r.IntN(2*chunkSize))
				n := q.read(got)
				if !bytes.Equal(got[:n], want.Next(n)) {
					t.Fatalf("step %d: read returned wrong bytes", i)
				}
			} else {
				var flat []byte
				for _, b := range q.buffers(nil) {
					flat = append(flat, b...)
				}
				if !bytes.Equal(flat, want.Bytes()) {
					t.Fatalf("step %d: buffers do not match the queue", i)
				}
				n := r.IntN(len(flat) + 1)
				q.discardN(n)
				want.Next(n)
			}
		}
		if q.len() != want.Len() {
			t.Fatalf("step %d: len %d, want %d", i, q.len(), want.Len())
		}
	}
	q.reset()
	if q.len() != 0 || q.chunks != nil {
		t.Fatal("reset left bytes")
	}
}
