package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"10.0.0.1:8080", "10.0.0.1:8080"},
		{"127.0.0.1:1", "127.0.0.1:1"},
		{"[fd00::1]:80", "[fd00::1]:80"},
		{"[::1]:65535", "[::1]:65535"},
		{"[FD00:0::1]:80", "[fd00::1]:80"},
		{"10.0.0.1:65536", ""},
		{"10.0.0.1:0", ""},
		{"10.0.0.1:080", ""},
		{"10.0.0.1:+80", ""},
		{"10.0.0.1:-1", ""},
		{"10.0.0.1", ""},
		{"10.0.0.1:", ""},
		{":80", ""},
		{"example.com:80", ""},
		{"localhost:80", ""},
		{"010.0.0.1:80", ""},
		{"10.0.0:80", ""},
		{"fd00::1:80", ""},
		{"[10.0.0.1]:80", ""},
		{"[fe80::1%eth0]:80", ""},
		{"[::ffff:10.0.0.1]:80", ""},
		{"[fd00::1:80", ""},
		{"10.0.0.1:80/x", ""},
		{"user@10.0.0.1:80", ""},
		{" 10.0.0.1:80", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := ParseAuthority(tt.in)
		if tt.want == "" {
			if err == nil || !errors.Is(err, ErrBadAuthority) {
				t.Errorf("ParseAuthority(%q) = %v, %v; want ErrBadAuthority", tt.in, got, err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseAuthority(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.1:8080", "[fd00::1]:80", "[fe80::1%eth0]:80", "a:1", "1.2.3.4:00", "[::ffff:1.2.3.4]:9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			return
		}
		// The canonical form parses to the same destination, and no accepted
		// address is one that policy could mistake for another.
		again, err := ParseAuthority(ap.String())
		if err != nil || again != ap {
			t.Fatalf("ParseAuthority(%q) = %v, but its canonical form gives %v, %v", s, ap, again, err)
		}
		if ap.Addr().Zone() != "" || ap.Addr().Is4In6() || ap.Port() == 0 {
			t.Fatalf("ParseAuthority(%q) accepted %v", s, ap)
		}
	})
}

func TestRoundTrip(t *testing.T) {
	m := newMesh(t, meshOptions{})
	echo := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hdr := http.Header{
		"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Baggage":     {"userId=alice"},
	}
	c, err := m.pool.Dial(ctx, m.key, echo, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*Stream).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo returned %d bytes, want the %d sent", len(got), len(payload))
	}
	reqs := m.requests()
	if len(reqs) != 1 {
		t.Fatalf("handler saw %d requests", len(reqs))
	}
	r := reqs[0]
	if r.Peer != clientID || r.Authority.String() != echo {
		t.Errorf("request peer %v authority %v", r.Peer, r.Authority)
	}
	if r.Header.Get("traceparent") != hdr.Get("traceparent") || r.Header.Get("baggage") != "userId=alice" {
		t.Errorf("trace headers not carried: %v", r.Header)
	}
	// A second tunnel reuses the pooled connection.
	c2, err := m.pool.Dial(ctx, m.key, echo, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if n := m.pool.Conns(m.key); n != 1 {
		t.Errorf("pool holds %d connections, want 1", n)
	}
}

func TestStatuses(t *testing.T) {
	m := newMesh(t, meshOptions{handler: func(ctx context.Context, r *Request) (net.Conn, error) {
		if r.Authority.Port() == 1 {
			return nil, Forbidden(errors.New("policy says no"))
		}
		return dialHandler(ctx, r)
	}})
	if _, err := m.dial("127.0.0.1:1"); statusOf(err) != 403 {
		t.Errorf("forbidden: err = %v, want 403", err)
	}
	if _, err := m.dial(closedPort(t)); statusOf(err) != 503 {
		t.Errorf("closed port: err = %v, want 503", err)
	}
	if _, err := m.dial("example.com:80"); !errors.Is(err, ErrBadAuthority) {
		t.Errorf("bad authority: err = %v", err)
	}
}

func TestIdentityRefused(t *testing.T) {
	other := identitytest.NewCA(t)
	echo := echoServer(t)
	tests := []struct {
		name string
		o    meshOptions
	}{
		{"client certificate from a foreign CA", meshOptions{cliCA: other}},
		{"server certificate from a foreign CA", meshOptions{srvCA: other}},
		{"server is not the expected identity", meshOptions{expectDst: identity.New("ns-b", "someone-else")}},
		{"client is not an allowed identity", meshOptions{srvAuthz: identity.ExpectID(identity.New("ns-a", "allowed"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh(t, tt.o)
			c, err := m.dial(echo)
			if err == nil {
				c.Close()
				t.Fatal("tunnel opened")
			}
			if n := len(m.requests()); n != 0 {
				t.Fatalf("handler ran %d times", n)
			}
		})
	}
}

func TestHalfClose(t *testing.T) {
	// The backend reads to EOF, then answers and closes: the request's
	// END_STREAM must reach it as a FIN while the reply still flows back.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		got, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(got))
	}()
	m := newMesh(t, meshOptions{})
	s, err := m.dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("hello"))
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("write after CloseWrite succeeded")
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(s)
	if err != nil || string(reply) != "got 5 bytes" {
		t.Fatalf("reply %q, %v", reply, err)
	}
}

func TestResetReachesBackend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		closed <- err
	}()
	m := newMesh(t, meshOptions{})
	s, err := m.dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("x"))
	s.Close() // both ways: the server must close the backend
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("backend connection still open after the client reset the stream")
	}
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Error("read on a closed stream succeeded")
	}
}

func TestDeadlines(t *testing.T) {
	m := newMesh(t, meshOptions{})
	s, err := m.dial(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = s.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read err = %v, want deadline exceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("deadline error is not a timeout: %v", err)
	}
	s.SetReadDeadline(time.Time{})
	s.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after clearing the deadline: %q %v", buf, err)
	}
}

// TestSlowReader: a destination that does not read stops the client after one
// stream window, while other streams on the same connection keep flowing, and
// everything arrives once it reads.
func TestSlowReader(t *testing.T) {
	const window = 256 << 10
	pipes := make(chan net.Conn, 1)
	m := newMesh(t, meshOptions{
		srvLimits: Limits{StreamWindow: window, ConnWindow: 4 * window},
		handler: func(ctx context.Context, r *Request) (net.Conn, error) {
			if r.Authority.Port() == 9 {
				// net.Pipe has no buffer: what is not read stays in the stream.
				a, b := net.Pipe()
				pipes <- b
				return a, nil
			}
			return dialHandler(ctx, r)
		},
	})
	slow, err := m.dial("127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	dst := <-pipes
	defer dst.Close()

	payload := make([]byte, 4*window)
	rand.Read(payload)
	slow.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := slow.Write(payload)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a stalled tunnel: n=%d err=%v, want a deadline", n, err)
	}
	if n > window || n < window/2 {
		t.Fatalf("wrote %d bytes into a stalled stream, want about the window (%d)", n, window)
	}

	// Another stream on the same connection is not blocked by the stalled one.
	fast, err := m.dial(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	fast.SetDeadline(time.Now().Add(5 * time.Second))
	msg := bytes.Repeat([]byte("y"), 100<<10)
	go fast.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(fast, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("second stream: %v", err)
	}
	if m.pool.Conns(m.key) != 1 {
		t.Fatalf("streams did not share a connection")
	}

	// Drain: the rest goes through once the destination reads.
	slow.SetWriteDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := slow.Write(payload[n:])
		done <- err
	}()
	dst.SetReadDeadline(time.Now().Add(10 * time.Second))
	recv := make([]byte, len(payload))
	if _, err := io.ReadFull(dst, recv); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(recv, payload) {
		t.Fatal("bytes corrupted or reordered across the stall")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSlowTCPDestination exercises the direct-write path: the reader writes
// straight into a TCP destination that stops reading, must give up after a
// short wait and queue, and must not stall another stream.
func TestSlowTCPDestination(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(16 << 10)
			accepted <- c
		}
	}()
	m := newMesh(t, meshOptions{})
	slow, err := m.dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	dst := <-accepted
	defer dst.Close()
	payload := make([]byte, 16<<20)
	rand.Read(payload)
	wrote := make(chan error, 1)
	go func() {
		_, err := slow.Write(payload)
		wrote <- err
	}()
	time.Sleep(200 * time.Millisecond)

	fast, err := m.dial(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	fast.SetDeadline(time.Now().Add(5 * time.Second))
	fast.Write([]byte("still here"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(fast, buf); err != nil {
		t.Fatalf("a stalled destination blocked another stream: %v", err)
	}
	dst.SetReadDeadline(time.Now().Add(20 * time.Second))
	recv := make([]byte, len(payload))
	if _, err := io.ReadFull(dst, recv); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(recv, payload) {
		t.Fatal("bytes corrupted or reordered")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

func TestManyStreams(t *testing.T) {
	m := newMesh(t, meshOptions{srvLimits: Limits{MaxConcurrentStreams: 50}})
	echo := echoServer(t)
	const n = 120
	var wg sync.WaitGroup
	errs := make(chan error, n)
	streams := make(chan *Stream, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := m.dial(echo)
			if err != nil {
				errs <- err
				return
			}
			streams <- s
			s.SetDeadline(time.Now().Add(10 * time.Second))
			msg := []byte(fmt.Sprintf("stream %d says hello", i))
			if _, err := s.Write(msg); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("stream %d: %q %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// All 120 are still open: the server allows 50 per connection.
	if c := m.pool.Conns(m.key); c != 3 {
		t.Errorf("pool opened %d connections for %d streams at 50 each, want 3", c, n)
	}
	close(streams)
	for s := range streams {
		s.Close()
	}
}

func TestIdleTimeout(t *testing.T) {
	m := newMesh(t, meshOptions{idle: 100 * time.Millisecond})
	s, err := m.dial(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for m.pool.Conns(m.key) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection not closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And the pool dials again.
	s, err = m.dial(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestShutdownGoAway(t *testing.T) {
	m := newMesh(t, meshOptions{})
	echo := echoServer(t)
	s, err := m.dial(echo)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.srv.Shutdown(context.Background()) }()
	// The open stream keeps working through the drain.
	time.Sleep(50 * time.Millisecond)
	s.SetDeadline(time.Now().Add(5 * time.Second))
	s.Write([]byte("drain"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatalf("stream broken by GOAWAY: %v", err)
	}
	if _, err := m.dial(echo); err == nil {
		t.Error("new tunnel opened on a shut-down server")
	}
	s.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream closed")
	}
}

// TestDrain: a draining server keeps its open streams and keeps accepting,
// but every connection gets GOAWAY (one accepted while draining, at its
// first stream), so clients take each next stream elsewhere; connections
// close once idle.
func TestDrain(t *testing.T) {
	m := newMesh(t, meshOptions{})
	echo := echoServer(t)
	s1, err := m.dial(echo)
	if err != nil {
		t.Fatal(err)
	}
	m.srv.Drain()
	time.Sleep(50 * time.Millisecond) // the GOAWAY reaches the pool
	roundTrip := func(s *Stream, what string) {
		t.Helper()
		s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Write([]byte(what)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		buf := make([]byte, len(what))
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	roundTrip(s1, "open before the drain")
	var streams []*Stream
	for i := range 3 {
		s, err := m.dial(echo)
		if err != nil {
			t.Fatalf("stream %d while draining: %v", i, err)
		}
		streams = append(streams, s)
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range streams {
		roundTrip(s, "opened while draining")
	}
	// Each stream after the drain began came on a connection of its own.
	conns := map[string]bool{}
	for _, r := range m.requests() {
		conns[r.RemoteAddr.String()] = true
	}
	if len(conns) != 4 {
		t.Errorf("4 streams came on %d connections, want 4", len(conns))
	}
	s1.Close()
	for _, s := range streams {
		s.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		t.Errorf("connections still open after their streams ended: %v", err)
	}
	if n := len(m.requests()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
}

// TestPoolKeys: streams share a connection only under the same key, and the
// server sees the source identity of the key's certificate.
func TestPoolKeys(t *testing.T) {
	m := newMesh(t, meshOptions{})
	echo := echoServer(t)
	other := identity.New("ns-a", "other")
	certs := map[identity.ID]*identity.CertSource{
		clientID: identity.NewCertSource(m.ca.Issue(t, clientID)),
		other:    identity.NewCertSource(m.ca.Issue(t, other)),
	}
	pool, err := NewPool(PoolOptions{TLSConfig: func(k Key) (*tls.Config, error) {
		return identity.ClientConfig(identity.TLSOptions{Certs: certs[k.Src], Roots: m.ca.Roots(), Authorize: identity.ExpectID(k.Dst)})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()
	keyA := Key{Src: clientID, Dst: serverID, Addr: m.addr}
	keyB := Key{Src: other, Dst: serverID, Addr: m.addr}
	for _, k := range []Key{keyA, keyA, keyB, keyB, keyA} {
		c, err := pool.Dial(ctx, k, echo, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if a, b := pool.Conns(keyA), pool.Conns(keyB); a != 1 || b != 1 {
		t.Fatalf("connections per key: %d and %d, want 1 and 1", a, b)
	}
	var peers []identity.ID
	for _, r := range m.requests() {
		peers = append(peers, r.Peer)
	}
	want := []identity.ID{clientID, clientID, other, other, clientID}
	if fmt.Sprint(peers) != fmt.Sprint(want) {
		t.Fatalf("server saw peers %v, want %v", peers, want)
	}
}

// TestSlowClientReader: a client that does not read holds at most its stream
// window; the server stops reading its backend instead of buffering.
func TestSlowClientReader(t *testing.T) {
	const window = 256 << 10
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var n int64
		buf := make([]byte, 64<<10)
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			m, err := c.Write(buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		sent <- n
	}()
	m := newMesh(t, meshOptions{cliLimits: Limits{StreamWindow: window, ConnWindow: 4 * window}})
	s, err := m.dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := <-sent // the backend is blocked: everything in between is full
	m.pool.mu.Lock()
	c := m.pool.entries[m.key].conns[0]
	m.pool.mu.Unlock()
	c.mu.Lock()
	queued := s.recvQ.len()
	c.mu.Unlock()
	if queued > window || queued == 0 {
		t.Fatalf("client queued %d bytes, want (0, %d]", queued, window)
	}
	// The rest sits in socket buffers, not in the tunnels: bounded, whatever
	// the backend had to send.
	if n > 64<<20 {
		t.Fatalf("backend wrote %d bytes into a tunnel nobody reads", n)
	}
	got, err := io.ReadAll(s)
	if err != nil || int64(len(got)) != n {
		t.Fatalf("read %d of %d bytes: %v", len(got), n, err)
	}
}
