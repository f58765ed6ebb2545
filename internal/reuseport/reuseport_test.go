package reuseport

import (
	"context"
	"net"
	"testing"
	"time"
)

// Two listeners share a port with the option; a port held without it is
// waited for, and served once it is free.
func TestListenAndWait(t *testing.T) {
	ctx := context.Background()
	a, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen(ctx, a.Addr().String())
	if err != nil {
		t.Fatalf("second listener on the shared port: %v", err)
	}
	b.Close()

	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := plain.Addr().String()
	if _, err := Listen(ctx, addr); !Held(err) {
		t.Fatalf("a port held without SO_REUSEPORT: got %v, want it held", err)
	}
	helds := 0
	go func() {
		time.Sleep(200 * time.Millisecond)
		plain.Close()
	}()
	ln, err := Wait(ctx, addr, 50*time.Millisecond, func() { helds++ })
	if err != nil || ln == nil {
		t.Fatalf("Wait: %v %v", ln, err)
	}
	ln.Close()
	if helds == 0 {
		t.Error("held was never called while the port was held")
	}

	cctx, cancel := context.WithCancel(ctx)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cancel()
	if ln, err := Wait(cctx, held.Addr().String(), time.Second, nil); ln != nil || err != nil {
		t.Errorf("Wait after ctx ended: %v %v, want nil, nil", ln, err)
	}
}
