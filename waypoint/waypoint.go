package waypoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/waypoint/lb"
	"github.com/warrenmesh/warren/waypoint/model"
)

// Defaults of Options.
const (
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultRetryBufferBytes = 256 << 10
	DefaultReadHeaderTime   = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
)

// Options configures a Waypoint.
type Options struct {
	// Self is the waypoint, "<namespace>/<name>": it fronts the Services
	// whose waypoint field names it. Required.
	Self string
	// Certs is the waypoint's own certificate (its SPIFFE ID: upstream
	// tunnels are opened as it); Roots the mesh CA. Required.
	Certs *identity.CertSource
	Roots *identity.Roots
	// TrustDomain of the callers accepted; identity.DefaultTrustDomain if
	// empty.
	TrustDomain string
	Logger      *slog.Logger
	// Registry receives the metrics; a fresh one if nil.
	Registry *prometheus.Registry
	// HBONE limits, downstream and upstream.
	HBONE hbone.Limits
	// TunnelAddr is where an enrolled endpoint's HBONE listener is:
	// <ip>:15008 if nil (tests map addresses to loopback ports).
	TunnelAddr func(netip.Addr) netip.AddrPort
	// DialContext dials the tunnels and plain endpoints; net.Dialer if nil.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxHeaderBytes bounds a request's header (431 beyond);
	// DefaultMaxHeaderBytes if zero.
	MaxHeaderBytes int
	// RetryBufferBytes is how much of a request body is kept to replay it
	// on a retry; a longer body is not retried. DefaultRetryBufferBytes if
	// zero.
	RetryBufferBytes int
}

// Waypoint is a running waypoint.
type Waypoint struct {
	o       Options
	self    identity.ID
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics

	cfg   atomic.Pointer[meshv1.WaypointConfig]
	state atomic.Pointer[model.State]

	srv   *hbone.Server
	pool  *hbone.Pool
	httpd *http.Server
	conns *connListener
	lb    lb.Balancer
	ups   *upstreams

	mirrors chan struct{} // semaphore of mirrored requests in flight

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  atomic.Bool
}

// New returns a Waypoint serving no configuration yet (SetConfig).
func New(o Options) (*Waypoint, error) {
	if o.Self == "" || o.Certs == nil || o.Roots == nil {
		return nil, errors.New("waypoint: Self, Certs and Roots are required")
	}
	cert := o.Certs.Load()
	if cert == nil || cert.Leaf == nil {
		return nil, errors.New("waypoint: no certificate (with its parsed leaf)")
	}
	self, err := identity.FromCertificate(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("waypoint: own certificate: %w", err)
	}
	if o.TrustDomain == "" {
		o.TrustDomain = identity.DefaultTrustDomain
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.TunnelAddr == nil {
		o.TunnelAddr = func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, hbone.Port) }
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.RetryBufferBytes == 0 {
		o.RetryBufferBytes = DefaultRetryBufferBytes
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, err
	}
	w := &Waypoint{o: o, self: self, log: o.Logger, reg: o.Registry, metrics: m, mirrors: make(chan struct{}, 64)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	srvTLS, err := identity.ServerConfig(identity.TLSOptions{Certs: o.Certs, Roots: o.Roots, Authorize: identity.ExpectTrustDomain(o.TrustDomain)})
	if err != nil {
		return nil, err
	}
	w.srv = &hbone.Server{TLSConfig: srvTLS, Handler: w.tunnel, Logger: w.log, Limits: o.HBONE, IdleTimeout: hbone.DefaultIdleTimeout}
	w.pool, err = hbone.NewPool(hbone.PoolOptions{
		TLSConfig: func(k hbone.Key) (*tls.Config, error) {
			return identity.ClientConfig(identity.TLSOptions{Certs: o.Certs, Roots: o.Roots, Authorize: identity.ExpectID(k.Dst)})
		},
		DialContext: o.DialContext,
		Limits:      o.HBONE,
		Logger:      w.log,
	})
	if err != nil {
		return nil, err
	}
	w.ups = newUpstreams(w)
	w.conns = newConnListener()
	w.httpd = &http.Server{
		Handler:           w,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ReadHeaderTimeout: DefaultReadHeaderTime,
		IdleTimeout:       DefaultIdleTimeout,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tunnelConn); ok {
				return context.WithValue(ctx, tunnelKey{}, tc.info)
			}
			return ctx
		},
	}
	w.httpd.Protocols = new(http.Protocols)
	w.httpd.Protocols.SetHTTP1(true)
	w.httpd.Protocols.SetUnencryptedHTTP2(true)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.httpd.Serve(w.conns)
	}()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.ups.janitor(w.ctx)
	}()
	return w, nil
}

// Identity is the waypoint's own SPIFFE ID.
func (w *Waypoint) Identity() identity.ID { return w.self }

// Registry is where the waypoint's metrics are.
func (w *Waypoint) Registry() *prometheus.Registry { return w.reg }

// SetConfig compiles cfg and, when it is valid, serves it from the next
// request on; otherwise it returns why and the previous configuration stays.
func (w *Waypoint) SetConfig(cfg *meshv1.WaypointConfig) error {
	st, err := model.Compile(cfg, w.o.Self)
	if err != nil {
		w.metrics.configs.WithLabelValues("rejected").Inc()
		return err
	}
	w.cfg.Store(proto.Clone(cfg).(*meshv1.WaypointConfig))
	w.state.Store(st)
	w.metrics.configs.WithLabelValues("applied").Inc()
	w.ready.Store(true)
	return nil
}

// Ready reports whether a configuration is served.
func (w *Waypoint) Ready() bool { return w.ready.Load() }

// Serve accepts HBONE connections on ln until Close or Shutdown.
func (w *Waypoint) Serve(ln net.Listener) error {
	err := w.srv.Serve(ln)
	if errors.Is(err, hbone.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting tunnels and waits for open ones, until ctx ends;
// then it closes everything.
func (w *Waypoint) Shutdown(ctx context.Context) error {
	w.ready.Store(false)
	err := w.srv.Shutdown(ctx)
	w.httpd.Shutdown(ctx)
	w.Close()
	return err
}

// Close closes every tunnel and upstream connection at once.
func (w *Waypoint) Close() error {
	w.ready.Store(false)
	w.cancel()
	w.srv.Close()
	w.conns.Close()
	w.httpd.Close()
	w.ups.close()
	w.pool.Close()
	w.wg.Wait()
	return nil
}

// tunnelInfo is what a downstream tunnel tells about its requests.
type tunnelInfo struct {
	authority netip.AddrPort
	caller    identity.ID
	// addr is the caller's address: the client ztunnel dials from inside
	// the caller's pod.
	addr netip.Addr
}

type tunnelKey struct{}

// tunnel decides on a downstream HBONE stream.
func (w *Waypoint) tunnel(ctx context.Context, req *hbone.Request) (net.Conn, error) {
	st := w.state.Load()
	if st == nil {
		w.metrics.tunnelsRefused.WithLabelValues("not_ready").Inc()
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Err: errors.New("no configuration yet")}
	}
	port, ok := st.Lookup(req.Authority)
	if !ok {
		w.metrics.tunnelsRefused.WithLabelValues("unknown_service").Inc()
		return nil, &hbone.StatusError{Code: http.StatusNotFound, Err: fmt.Errorf("%s is no Service this waypoint fronts", req.Authority)}
	}
	info := &tunnelInfo{authority: req.Authority, caller: req.Peer}
	if ta, ok := req.RemoteAddr.(*net.TCPAddr); ok {
		info.addr = ta.AddrPort().Addr().Unmap()
	}
	if port.Protocol == model.TCP {
		return w.tcpUpstream(ctx, st, port, info)
	}
	mine, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	if err := w.conns.push(&tunnelConn{Conn: theirs, info: info}); err != nil {
		mine.Close()
		theirs.Close()
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Err: err}
	}
	return mine, nil
}

// socketPair returns the two ends of a Unix stream socket pair: the HBONE
// server relays the tunnel to one, net/http serves the other. Kernel
// buffers bound what is in flight; both ends half-close.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	conn := func(fd int) (net.Conn, error) {
		f := os.NewFile(uintptr(fd), "waypoint-tunnel")
		defer f.Close()
		return net.FileConn(f)
	}
	a, err := conn(fds[0])
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	b, err := conn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// tunnelConn is the HTTP server's end of a tunnel.
type tunnelConn struct {
	net.Conn
	info *tunnelInfo
}

// RemoteAddr is the caller's, for net/http's logs and Request.RemoteAddr.
func (c *tunnelConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.info.addr, 0))
}

// connListener hands tunnels to the HTTP server.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

var errListenerClosed = errors.New("waypoint: closed")

func (l *connListener) push(c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return errListenerClosed
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.UnixAddr{Name: "waypoint-tunnels", Net: "unix"} }
