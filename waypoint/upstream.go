package waypoint

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/waypoint/model"
)

// Upstream connection reuse: an HBONE tunnel carries one caller, because
// the destination reads the original caller from the tunnel's CONNECT
// (Forwarded, X-Warren-Caller). So each caller (identity and address) has
// its own transports, HTTP/1.1 and h2c, each pooling connections per
// endpoint; a caller's transports are dropped after callerIdle without use.
const (
	callerIdle      = 2 * time.Minute
	upstreamIdle    = 90 * time.Second
	maxIdlePerHost  = 64
	maxRespHeader   = 64 << 10
	janitorInterval = 30 * time.Second
)

// Header names on the upstream CONNECT (internal/hbone's: the destination
// ztunnel reads them with hbone.Caller).
const (
	HeaderForwarded = hbone.HeaderForwarded
	HeaderCaller    = hbone.HeaderCaller
)

type callerKey struct {
	id   identity.ID
	addr netip.Addr
}

type callerTransports struct {
	h1, h2 *http.Transport
	last   atomic.Int64 // unix nanoseconds of the last use
}

type upstreams struct {
	w  *Waypoint
	mu sync.Mutex
	m  map[callerKey]*callerTransports
}

func newUpstreams(w *Waypoint) *upstreams {
	return &upstreams{w: w, m: map[callerKey]*callerTransports{}}
}

// transport returns the caller's transport for HTTP/1.1 or h2c backends.
func (u *upstreams) transport(k callerKey, h2 bool) *http.Transport {
	u.mu.Lock()
	ct := u.m[k]
	if ct == nil {
		dial := u.dialer(k)
		ct = &callerTransports{h1: newTransport(dial, false), h2: newTransport(dial, true)}
		u.m[k] = ct
	}
	u.mu.Unlock()
	ct.last.Store(time.Now().UnixNano())
	if h2 {
		return ct.h2
	}
	return ct.h1
}

func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error), h2 bool) *http.Transport {
	t := &http.Transport{
		DialContext:            dial,
		MaxIdleConnsPerHost:    maxIdlePerHost,
		IdleConnTimeout:        upstreamIdle,
		DisableCompression:     true, // a proxy passes Accept-Encoding through as it is
		MaxResponseHeaderBytes: maxRespHeader,
		Protocols:              new(http.Protocols),
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	if h2 {
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// janitor drops the transports of callers gone quiet.
func (u *upstreams) janitor(ctx context.Context) {
	tick := time.NewTicker(janitorInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cutoff := time.Now().Add(-callerIdle).UnixNano()
		u.mu.Lock()
		for k, ct := range u.m {
			if ct.last.Load() < cutoff {
				delete(u.m, k)
				ct.h1.CloseIdleConnections()
				ct.h2.CloseIdleConnections()
			}
		}
		u.mu.Unlock()
	}
}

func (u *upstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, ct := range u.m {
		delete(u.m, k)
		ct.h1.CloseIdleConnections()
		ct.h2.CloseIdleConnections()
	}
}

// dialError marks a failure before anything was sent: always safe to
// retry elsewhere.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial upstream: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialer returns the caller's dial: an HBONE stream to an enrolled
// endpoint's pod as the waypoint's identity, expecting the endpoint's, with
// the caller on the CONNECT; plain TCP to an endpoint outside the mesh.
func (u *upstreams) dialer(k callerKey) func(ctx context.Context, network, addr string) (net.Conn, error) {
	hdr := http.Header{HeaderCaller: {k.id.String()}}
	if k.addr.IsValid() {
		hdr.Set(HeaderForwarded, hbone.ForwardedFor(k.addr))
	}
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, &dialError{err}
		}
		st := u.w.state.Load()
		ep, ok := st.Endpoint(ap.Addr())
		if !ok {
			return nil, &dialError{fmt.Errorf("%s is no endpoint of the configuration", ap)}
		}
		if !ep.Enrolled {
			c, err := u.w.o.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		}
		key := hbone.Key{Src: u.w.self, Dst: ep.Identity, Addr: u.w.o.TunnelAddr(ep.Addr)}
		c, err := u.w.pool.Dial(ctx, key, addr, hdr)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	}
}

// candidates are the ready endpoints of a Service port, by address.
func candidates(p *model.Port) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(p.Service.Endpoints))
	for _, e := range p.Service.Endpoints {
		if !e.Ready {
			continue
		}
		if n, ok := p.EndpointPort(e); ok {
			out = append(out, netip.AddrPortFrom(e.Addr, n))
		}
	}
	return out
}

// pick chooses an endpoint of p, avoiding those tried.
func (w *Waypoint) pick(p *model.Port, tried map[netip.AddrPort]bool) (netip.AddrPort, func(), bool) {
	return w.lb.Pick(candidates(p), func(a netip.AddrPort) bool { return tried[a] }, rand.IntN)
}

// tcpUpstream opens the upstream of a plain TCP tunnel: an endpoint of the
// Service itself (TCP ports take no routes), a second one if the first
// cannot be reached.
func (w *Waypoint) tcpUpstream(ctx context.Context, st *model.State, port *model.Port, info *tunnelInfo) (net.Conn, error) {
	dial := w.ups.dialer(callerKey{id: info.caller, addr: info.addr})
	tried := map[netip.AddrPort]bool{}
	var lastErr error
	for range 2 {
		addr, done, ok := w.pick(port, tried)
		if !ok {
			break
		}
		tried[addr] = true
		c, err := dial(ctx, "tcp", addr.String())
		if err == nil {
			w.metrics.tcpOpened(st, port, info, addr).Inc()
			return &releaseConn{Conn: c, done: done}, nil
		}
		done()
		lastErr = err
	}
	w.metrics.tunnelsRefused.WithLabelValues("no_upstream").Inc()
	if lastErr == nil {
		lastErr = errors.New("no ready endpoint")
	}
	return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Err: lastErr}
}

// releaseConn ends the endpoint's outstanding count when it closes.
type releaseConn struct {
	net.Conn
	done func()
}

func (c *releaseConn) Close() error {
	c.done()
	return c.Conn.Close()
}

func (c *releaseConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
