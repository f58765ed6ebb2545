package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
)

var (
	clientID = identity.New("ns-a", "client")
	serverID = identity.New("ns-b", "server")
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// mesh is a CA, an HBONE server on loopback and a client pool.
type mesh struct {
	t       testing.TB
	ca      *identitytest.CA
	srv     *Server
	addr    netip.AddrPort
	pool    *Pool
	key     Key
	mu      sync.Mutex
	reqs    []*Request
	handler Handler
}

type meshOptions struct {
	srvLimits, cliLimits Limits
	srvLog               *slog.Logger
	handler              Handler
	srvCA, cliCA         *identitytest.CA // default: the mesh CA
	srvID, cliID         identity.ID
	srvAuthz             identity.Authorizer
	expectDst            identity.ID
	idle                 time.Duration
}

func newMesh(t testing.TB, o meshOptions) *mesh {
	t.Helper()
	m := &mesh{t: t, ca: identitytest.NewCA(t)}
	if o.srvCA == nil {
		o.srvCA = m.ca
	}
	if o.cliCA == nil {
		o.cliCA = m.ca
	}
	if o.srvID.IsZero() {
		o.srvID = serverID
	}
	if o.cliID.IsZero() {
		o.cliID = clientID
	}
	if o.srvAuthz == nil {
		o.srvAuthz = identity.ExpectTrustDomain(identity.DefaultTrustDomain)
	}
	if o.expectDst.IsZero() {
		o.expectDst = serverID
	}
	m.handler = o.handler
	if m.handler == nil {
		m.handler = dialHandler
	}
	sc, err := identity.ServerConfig(identity.TLSOptions{
		Certs: identity.NewCertSource(o.srvCA.Issue(t, o.srvID)), Roots: m.ca.Roots(), Authorize: o.srvAuthz})
	if err != nil {
		t.Fatal(err)
	}
	if o.srvLog == nil {
		o.srvLog = testLogger(t)
	}
	m.srv = &Server{TLSConfig: sc, Logger: o.srvLog, Limits: o.srvLimits, Handler: func(ctx context.Context, r *Request) (net.Conn, error) {
		m.mu.Lock()
		m.reqs = append(m.reqs, r)
		m.mu.Unlock()
		return m.handler(ctx, r)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	go m.srv.Serve(ln)
	t.Cleanup(func() { m.srv.Close() })

	cliCerts := identity.NewCertSource(o.cliCA.Issue(t, o.cliID))
	roots := m.ca.Roots()
	m.pool, err = NewPool(PoolOptions{
		Limits:      o.cliLimits,
		IdleTimeout: o.idle,
		Logger:      testLogger(t),
		TLSConfig: func(k Key) (*tls.Config, error) {
			return identity.ClientConfig(identity.TLSOptions{Certs: cliCerts, Roots: roots, Authorize: identity.ExpectID(k.Dst)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.pool.Close() })
	m.key = Key{Src: o.cliID, Dst: o.expectDst, Addr: m.addr}
	return m
}

func (m *mesh) requests() []*Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Request(nil), m.reqs...)
}

func (m *mesh) dial(authority string) (*Stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := m.pool.Dial(ctx, m.key, authority, nil)
	if err != nil {
		return nil, err
	}
	return c.(*Stream), nil
}

func dialHandler(ctx context.Context, r *Request) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", r.Authority.String())
}

// echoServer echoes every connection until EOF, then closes its write side.
func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func statusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, c *tls.Certificate) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der)
}

// logRecorder keeps the messages and attributes a logger received.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) has(substrs ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, l := range r.lines {
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return true
	}
	return false
}
