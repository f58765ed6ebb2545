package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
)

// The benchmarks compare one HBONE stream with the baseline a tunnel must
// beat: a plain TLS 1.3 relay (mTLS, io.Copy both ways, as ghostunnel-like
// proxies do), both relaying to the same kind of loopback TCP backend, in the
// same run. Compare the pairs as ratios; absolute figures depend on the box.

const benchChunk = 256 << 10

// sinkServer discards what it receives; a connection's total is reported when
// it ends. sourceServer sends forever.
func sinkServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bp := framePool.Get().(*[]byte)
				defer framePool.Put(bp)
				for {
					if _, err := c.Read(*bp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func sourceServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, benchChunk)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// tlsRelay is the baseline: a TLS 1.3 mTLS terminator that dials the backend
// named by the first line the client sends (so no HTTP/2 at all).
type tlsRelay struct {
	addr string
	cli  *tls.Config
}

func newTLSRelay(b *testing.B, m *mesh, backend string) *tlsRelay {
	sc, err := identity.ServerConfig(identity.TLSOptions{Certs: identity.NewCertSource(m.ca.Issue(b, serverID)), Roots: m.ca.Roots(), Authorize: identity.ExpectID(clientID)})
	if err != nil {
		b.Fatal(err)
	}
	sc.NextProtos = nil
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := net.Dial("tcp", backend)
				if err != nil {
					c.Close()
					return
				}
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, up)
				c.Close()
				up.Close()
			}()
		}
	}()
	cc, err := identity.ClientConfig(identity.TLSOptions{Certs: identity.NewCertSource(m.ca.Issue(b, clientID)), Roots: m.ca.Roots(), Authorize: identity.ExpectID(serverID)})
	if err != nil {
		b.Fatal(err)
	}
	cc.NextProtos = nil
	return &tlsRelay{addr: ln.Addr().String(), cli: cc}
}

func hboneDial(b *testing.B, m *mesh, backend string) net.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := m.pool.Dial(ctx, m.key, backend, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// outbound is the client-side tunnel of a two-hop chain, as a ztunnel runs it:
// it accepts plain TCP from the application and relays it into dial's
// connection. The application connects to the address it returns.
func outbound(b *testing.B, dial func() (net.Conn, error)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := dial()
				if err != nil {
					c.Close()
					return
				}
				if s, ok := up.(*Stream); ok {
					Relay(s, c)
					return
				}
				go func() {
					io.Copy(up, c)
					up.(interface{ CloseWrite() error }).CloseWrite()
				}()
				io.Copy(c, up)
				c.Close()
				up.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// benchConns runs run over: "hbone", an application TCP connection through
// two tunnels (outbound relay, HBONE, server relay) to backend; "tls-relay",
// the same chain with a plain TLS 1.3 relay pair in place of HBONE; and
// "hbone-stream", the Stream API used directly (one hop).
func benchConns(b *testing.B, backend string, run func(b *testing.B, c net.Conn)) {
	m := newMesh(b, meshOptions{})
	relay := newTLSRelay(b, m, backend)
	dialApp := func(b *testing.B, addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	hboneOut := outbound(b, func() (net.Conn, error) {
		return m.pool.Dial(context.Background(), m.key, backend, nil)
	})
	tlsOut := outbound(b, func() (net.Conn, error) { return tls.Dial("tcp", relay.addr, relay.cli) })
	b.Run("hbone", func(b *testing.B) { withCPU(b, func() { run(b, dialApp(b, hboneOut)) }) })
	b.Run("tls-relay", func(b *testing.B) { withCPU(b, func() { run(b, dialApp(b, tlsOut)) }) })
	b.Run("hbone-stream", func(b *testing.B) { withCPU(b, func() { run(b, hboneDial(b, m, backend)) }) })
}

// withCPU reports the process's CPU time per operation (user+system, every
// goroutine: application, tunnels and backend). On a shared, loaded machine
// it is a steadier comparison than wall time.
func withCPU(b *testing.B, f func()) {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	f()
	if b.N > 0 {
		b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
	}
}

func BenchmarkUpload(b *testing.B) {
	benchConns(b, sinkServer(b), func(b *testing.B, c net.Conn) {
		buf := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDownload(b *testing.B) {
	benchConns(b, sourceServer(b), func(b *testing.B, c net.Conn) {
		buf := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRoundTrip is a request/response of 1 KiB through an echo backend:
// the latency one tunnel hop adds per request.
func BenchmarkRoundTrip(b *testing.B) {
	benchConns(b, echoServer(b), func(b *testing.B, c net.Conn) {
		msg := make([]byte, 1<<10)
		got := make([]byte, len(msg))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkConnect is the cost of opening a tunnel on a pooled connection,
// against a fresh TLS connection for the relay.
func BenchmarkConnect(b *testing.B) {
	backend := sinkServer(b)
	m := newMesh(b, meshOptions{})
	relay := newTLSRelay(b, m, backend)
	ctx := context.Background()
	b.Run("hbone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := m.pool.Dial(ctx, m.key, backend, nil)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("tls-relay", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := tls.Dial("tcp", relay.addr, relay.cli)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}

// BenchmarkIdleStreamMemory reports the heap that open, idle tunnels hold,
// both ends and the backend connections included (all in this process), and
// the heap of the two idle pooled connections carrying them.
func BenchmarkIdleStreamMemory(b *testing.B) {
	const streams = 200
	m := newMesh(b, meshOptions{})
	echo := echoServer(b)
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	var perStream float64
	for b.Loop() {
		before := heap()
		var open []net.Conn
		for range streams {
			c, err := m.pool.Dial(context.Background(), m.key, echo, nil)
			if err != nil {
				b.Fatal(err)
			}
			// Move a byte each way so every buffer on the path was touched.
			c.Write([]byte{1})
			io.ReadFull(c, make([]byte, 1))
			open = append(open, c)
		}
		perStream = float64(heap()-before) / streams
		for _, c := range open {
			c.Close()
		}
	}
	b.ReportMetric(perStream, "heapB/stream")
	b.ReportMetric(float64(m.pool.Conns(m.key)), "conns")
}
