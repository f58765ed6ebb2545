package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"github.com/warrenmesh/warren/internal/identity"
)

// DefaultIdleTimeout is how long a pooled connection with no stream stays open.
const DefaultIdleTimeout = 30 * time.Second

// Key selects pooled connections: streams share a connection only when they
// have the same source identity (our certificate), the same expected peer
// identity and the same destination tunnel address.
type Key struct {
	Src identity.ID
	Dst identity.ID
	// Addr is the HBONE address of the destination, usually <pod IP>:15008.
	Addr netip.AddrPort
}

func (k Key) String() string { return k.Src.String() + "->" + k.Dst.String() + "@" + k.Addr.String() }

// PoolOptions configures a Pool.
type PoolOptions struct {
	// TLSConfig returns the client configuration for a key, normally
	// identity.ClientConfig with the source's certificate and
	// identity.ExpectID(key.Dst). Required.
	TLSConfig func(Key) (*tls.Config, error)
	// DialContext opens the TCP connection (the ztunnel dials from inside the
	// source pod's network namespace). Default: net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Limits.MaxConcurrentStreams caps streams per connection below what the
	// peer allows; a key gets another connection when all of its are full.
	Limits Limits
	// IdleTimeout closes connections with no stream; default DefaultIdleTimeout.
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// Pool opens HBONE streams over pooled connections.
type Pool struct {
	opts PoolOptions
	lim  Limits
	log  *slog.Logger

	mu      sync.Mutex
	entries map[Key]*poolEntry
	closed  bool
}

type poolEntry struct {
	conns   []*conn
	dialing chan struct{} // closed when the dial in progress ends
}

// NewPool returns a Pool.
func NewPool(o PoolOptions) (*Pool, error) {
	if o.TLSConfig == nil {
		return nil, errors.New("hbone: PoolOptions.TLSConfig is nil")
	}
	if err := o.Limits.Validate(); err != nil {
		return nil, err
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{}).DialContext
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pool{opts: o, lim: o.Limits.withDefaults(), log: log, entries: map[Key]*poolEntry{}}, nil
}

// ErrPoolClosed is returned by Dial after Close.
var ErrPoolClosed = errors.New("hbone: pool closed")

// connection-specific headers that HTTP/2 forbids (RFC 9113 8.2.2).
var forbiddenHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "te": true, "host": true,
}

// Dial opens a tunnel to authority (the destination ip:port) through the
// tunnel at key.Addr, carrying hdr (traceparent, baggage, ...). It returns a
// *Stream once the peer answered 200; any other answer is a *StatusError.
func (p *Pool) Dial(ctx context.Context, key Key, authority string, hdr http.Header) (net.Conn, error) {
	ap, err := ParseAuthority(authority)
	if err != nil {
		return nil, err
	}
	fields := make([]hpack.HeaderField, 0, 2+len(hdr))
	fields = append(fields, hpack.HeaderField{Name: ":method", Value: http.MethodConnect},
		hpack.HeaderField{Name: ":authority", Value: authority})
	for k, vs := range hdr {
		name := strings.ToLower(k)
		if forbiddenHeaders[name] || !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Errorf("hbone: header %q not allowed", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("hbone: header %q: invalid value", k)
			}
			fields = append(fields, hpack.HeaderField{Name: name, Value: v})
		}
	}
	var lastErr error
	// A stream refused by GOAWAY or a lowered limit was never processed, so
	// it is safe to try again on a fresh connection.
	for range 3 {
		c, err := p.getConn(ctx, key)
		if err != nil {
			return nil, err
		}
		s, err := c.openStream(ctx, fields, net.TCPAddrFromAddrPort(ap))
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, ErrRefused) || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, lastErr
}

// getConn returns a live connection for key with a stream slot reserved.
func (p *Pool) getConn(ctx context.Context, key Key) (*conn, error) {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		e := p.entries[key]
		if e == nil {
			e = &poolEntry{}
			p.entries[key] = e
		}
		live := e.conns[:0]
		for _, c := range e.conns {
			if c.usable() {
				live = append(live, c)
			}
		}
		clear(e.conns[len(live):])
		e.conns = live
		for _, c := range e.conns {
			if c.tryReserve() {
				p.mu.Unlock()
				return c, nil
			}
		}
		if ch := e.dialing; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			p.mu.Lock()
			continue
		}
		ch := make(chan struct{})
		e.dialing = ch
		p.mu.Unlock()
		c, err := p.dialConn(ctx, key)
		p.mu.Lock()
		e.dialing = nil
		close(ch)
		if err != nil {
			if len(e.conns) == 0 && p.entries[key] == e {
				delete(p.entries, key)
			}
			p.mu.Unlock()
			return nil, err
		}
		if p.closed {
			p.mu.Unlock()
			c.close()
			return nil, ErrPoolClosed
		}
		e.conns = append(e.conns, c)
	}
}

func (p *Pool) dialConn(ctx context.Context, key Key) (*conn, error) {
	cfg, err := p.opts.TLSConfig(key)
	if err != nil {
		return nil, fmt.Errorf("hbone: TLS config for %s: %w", key, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.lim.HandshakeTimeout)
	defer cancel()
	nc, err := p.opts.DialContext(ctx, "tcp", key.Addr.String())
	if err != nil {
		return nil, fmt.Errorf("hbone: dial %s: %w", key.Addr, err)
	}
	raw := &batchConn{Conn: nc}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("hbone: handshake with %s: %w", key.Addr, err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != identity.ALPN {
		nc.Close()
		return nil, fmt.Errorf("hbone: %s did not negotiate ALPN h2", key.Addr)
	}
	peer, err := identity.PeerID(cs)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("hbone: %s: %w", key.Addr, err)
	}
	c := newConn(tc, raw, p.lim, false, p.log)
	c.peer = peer
	c.idleTimeout = p.opts.IdleTimeout
	if err := c.start(); err != nil {
		c.close()
		return nil, fmt.Errorf("hbone: %s: %w", key.Addr, err)
	}
	go c.readLoop()
	// In TLS 1.3 a server that refuses our certificate says so after our
	// handshake completes: waiting for its SETTINGS surfaces that here.
	select {
	case <-c.settingsCh:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("hbone: %s: %w", key.Addr, c.errNow())
	case <-ctx.Done():
		c.close()
		return nil, fmt.Errorf("hbone: %s: waiting for SETTINGS: %w", key.Addr, ctx.Err())
	}
}

func (c *conn) errNow() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goingAway
}

func (c *conn) tryReserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.goingAway {
		return false
	}
	limit := int64(min(c.peerMaxStreams, c.lim.MaxConcurrentStreams))
	if int64(c.active+c.reserved) >= limit {
		return false
	}
	c.reserved++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return true
}

// openStream sends the CONNECT on a reserved slot and waits for the answer.
func (c *conn) openStream(ctx context.Context, fields []hpack.HeaderField, remote net.Addr) (*Stream, error) {
	c.mu.Lock()
	c.reserved--
	if c.err != nil || c.goingAway || c.nextID > 1<<31-1 {
		if c.nextID > 1<<31-1 {
			c.goingAway, c.closeWhenIdle = true, true
		}
		c.maybeIdleLocked()
		c.mu.Unlock()
		return nil, ErrRefused
	}
	id := c.nextID
	c.nextID += 2
	s := c.newStreamLocked(id)
	s.remote = remote
	c.writeHeadersLocked(id, fields, false)
	c.mu.Unlock()
	c.kick()

	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		s.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	for !s.gotResponse && s.recvErr == nil && ctx.Err() == nil {
		s.cond.Wait()
	}
	status, err := s.status, s.recvErr
	got := s.gotResponse
	c.mu.Unlock()
	switch {
	case got && status == http.StatusOK:
		return s, nil
	case got:
		s.Close()
		return nil, &StatusError{Code: status}
	case err != nil:
		s.Close()
		return nil, err
	default:
		s.Close()
		return nil, ctx.Err()
	}
}

// Close closes every pooled connection and their streams.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var conns []*conn
	for _, e := range p.entries {
		conns = append(conns, e.conns...)
	}
	p.entries = map[Key]*poolEntry{}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	return nil
}

// Conns reports how many live connections the pool holds for key.
func (p *Pool) Conns(key Key) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	if e := p.entries[key]; e != nil {
		for _, c := range e.conns {
			if c.usable() {
				n++
			}
		}
	}
	return n
}
