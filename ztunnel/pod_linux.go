package ztunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/podroute"
)

// podProxy is the tunnel inside one pod's netns.
type podProxy struct {
	t    *Tunnel
	pod  *LocalPod // the State's copy, so metrics and policy see the same pointer
	log  *slog.Logger
	ns   *nsThread
	pool *hbone.Pool
	srv  *hbone.Server

	ctx       context.Context
	cancel    context.CancelFunc
	listeners []net.Listener
	ports     map[uint16]bool // the listeners' own ports, which no steered connection has
	wg        sync.WaitGroup
	connsMu   sync.Mutex
	conns     map[net.Conn]struct{}
	streams   sync.Map // *hbone.Request → *inboundStream, from inboundHBONE to inboundDone
	// src4 and src6: the pod has the policy routing (internal/podroute) to
	// deliver to its app from the client's address, per family.
	src4, src6  atomic.Bool
	srcFallback sync.Once
}

// localPod is the pod as the tunnel serves it: the State's own copy when the
// configuration has the pod (static mode: metrics and policy then see the
// same pointer), else the source's, checked, with its identity (pods from
// the node agent).
func (t *Tunnel) localPod(pod LocalPod) (*LocalPod, error) {
	for _, ip := range pod.IPs {
		if sp := t.state().LocalPod(ip); sp != nil {
			if sp.UID != pod.UID {
				return nil, fmt.Errorf("ip %v is pod %s/%s (uid %s) in the configuration", ip, sp.Namespace, sp.Name, sp.UID)
			}
			return sp, nil
		}
	}
	if pod.UID == "" || len(pod.IPs) == 0 {
		return nil, errors.New("uid and ips required")
	}
	for _, ip := range pod.IPs {
		if !ip.IsValid() || ip.IsUnspecified() || ip.Unmap().IsLoopback() {
			return nil, fmt.Errorf("ip %v: not a pod address", ip)
		}
	}
	if pod.Mode != "" && !validMode(pod.Mode) {
		return nil, fmt.Errorf("mode %q: want STRICT or PERMISSIVE", pod.Mode)
	}
	p := pod
	p.NetnsFile = nil
	p.IPs = slices.Clone(pod.IPs)
	p.Enrolled = true
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	p.id = identity.ID{TrustDomain: t.cfg.TrustDomain, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount}
	if err := p.id.Validate(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &p, nil
}

func (t *Tunnel) startPod(ctx context.Context, pod LocalPod) (_ *podProxy, err error) {
	// A pod that cannot be given an identity cannot be routed or authorized.
	sp, err := t.localPod(pod)
	if err != nil {
		return nil, err
	}
	cert, err := t.cert(sp.Identity())
	if err != nil {
		return nil, err
	}
	nsf := pod.NetnsFile
	if nsf == nil {
		if nsf, err = os.Open(pod.Netns); err != nil {
			return nil, fmt.Errorf("netns: %w", err)
		}
		defer nsf.Close() // the thread holds the netns from here on
	}
	th, err := startNSThread(nsf)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(context.Background())
	p := &podProxy{t: t, pod: sp, log: t.log.With("pod", sp.Namespace+"/"+sp.Name), ns: th, ctx: pctx, cancel: cancel,
		conns: map[net.Conn]struct{}{}, ports: map[uint16]bool{}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	p.pool, err = hbone.NewPool(hbone.PoolOptions{
		TLSConfig: func(k hbone.Key) (*tls.Config, error) {
			c, err := identity.ClientConfig(identity.TLSOptions{Certs: cert.src, Roots: t.roots, Authorize: identity.ExpectID(k.Dst)})
			if err != nil {
				return nil, err
			}
			c.GetClientCertificate = cert.getClientCertificate
			return c, nil
		},
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return th.dial(ctx, ap, t.cfg.Mark, netip.Addr{})
		},
		Limits: t.cfg.HBONE,
		Logger: p.log,
	})
	if err != nil {
		return nil, err
	}
	srvTLS, err := identity.ServerConfig(identity.TLSOptions{Certs: cert.src, Roots: t.roots, Authorize: identity.ExpectTrustDomain(t.cfg.TrustDomain)})
	if err != nil {
		return nil, err
	}
	srvTLS.GetCertificate = cert.getCertificate
	p.srv = &hbone.Server{TLSConfig: t.metrics.countRefusals(srvTLS), Handler: p.inboundHBONE, Logger: p.log, Limits: t.cfg.HBONE, IdleTimeout: hbone.DefaultIdleTimeout, OnStreamDone: p.inboundDone}

	// Ports of this generation's own (see OutboundPort): another ztunnel
	// may still listen in the pod, draining.
	listen := func(network, addr string) (*net.TCPListener, uint16, error) {
		ln, err := th.listen(network, addr)
		if err != nil {
			return nil, 0, err
		}
		p.listeners = append(p.listeners, ln)
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		p.ports[port] = true
		return ln, port, nil
	}
	var pl podListeners
	if _, pl.port4, err = listen("tcp4", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("outbound listener: %w", err)
	}
	if slices.ContainsFunc(sp.IPs, func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }) {
		if _, pl.port6, err = listen("tcp6", "[::1]:0"); err != nil {
			return nil, fmt.Errorf("outbound listener: %w", err)
		}
	}
	in, _, err := listen("tcp", ":0")
	if err != nil {
		return nil, fmt.Errorf("inbound listener: %w", err)
	}
	hb, _, err := listen("tcp", ":0")
	if err != nil {
		return nil, fmt.Errorf("hbone listener: %w", err)
	}
	pl.inbound, pl.hbone = in, hb
	// Serving first: the switch below sends connections here at once.
	for _, ln := range p.listeners[:len(p.listeners)-2] {
		p.serve(ln, p.outbound)
	}
	p.serve(in, p.inboundPlain)
	p.wg.Go(func() { p.srv.Serve(hb) })
	if _, err := t.kernel.setListeners(pl); err != nil {
		return nil, fmt.Errorf("register listeners: %w", err)
	}
	// Whether the pod has the routing to deliver from clients' addresses:
	// the agent writes it at enrollment (internal/podroute).
	if err := th.do(func() error {
		for _, f := range []struct {
			family int
			ready  *atomic.Bool
		}{{unix.AF_INET, &p.src4}, {unix.AF_INET6, &p.src6}} {
			ok, err := podroute.Ready(f.family, t.cfg.Mark)
			if err != nil {
				return err
			}
			f.ready.Store(ok)
		}
		return nil
	}); err != nil {
		p.log.Warn("cannot read the pod's routing rules: its app sees the pod's own address as the client's", "err", err)
	}
	p.log.Info("pod served", "uid", sp.UID, "identity", sp.Identity(), "mode", t.state().modeOf(sp),
		"outbound_port", pl.port4, "outbound_port6", pl.port6, "inbound", in.Addr(), "hbone", hb.Addr(),
		"client_address_ipv4", p.src4.Load(), "client_address_ipv6", p.src6.Load())
	return p, nil
}

func (p *podProxy) serve(ln net.Listener, handle func(*net.TCPConn)) {
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					p.log.Warn("accept failed", "addr", ln.Addr(), "err", err)
				}
				return
			}
			p.track(c, true)
			go func() {
				defer p.track(c, false)
				handle(c.(*net.TCPConn))
			}()
		}
	})
}

// track keeps the pod's live connections, so close can end them.
func (p *podProxy) track(c net.Conn, add bool) {
	p.connsMu.Lock()
	defer p.connsMu.Unlock()
	if add {
		if p.conns == nil { // closing
			c.Close()
			return
		}
		p.conns[c] = struct{}{}
	} else if p.conns != nil {
		delete(p.conns, c)
	}
}

// drainPoll is how often drain looks at accept queues and connections.
const drainPoll = 20 * time.Millisecond

// drain stops the pod's proxy within grace without dropping what it
// accepted. By the time it runs, another tunnel generation has usually
// taken over the pod's listeners in the kernel (or, without a successor,
// new connections are to fail): so HBONE clients are sent GOAWAY (their next
// streams open new connections, which reach the current generation), the
// listeners keep accepting until their queues are empty, then close, and
// the open connections get the rest of grace to finish before close ends
// them.
func (p *podProxy) drain(grace time.Duration) {
	if grace <= 0 {
		p.close()
		return
	}
	deadline := time.Now().Add(grace)
	p.srv.Drain()
	// Connections already in an accept queue were steered here before the
	// switch; give them to the accept loops. Queues are checked over two
	// polls, so that a handshake completing between them is not lost.
	for empty := 0; empty < 2 && time.Now().Before(deadline); {
		time.Sleep(drainPoll)
		if p.queued() == 0 {
			empty++
		} else {
			empty = 0
		}
	}
	for _, ln := range p.listeners {
		ln.Close()
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	p.srv.Shutdown(ctx) // waits for the HBONE streams
	for time.Now().Before(deadline) {
		p.connsMu.Lock()
		n := len(p.conns)
		p.connsMu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(drainPoll)
	}
	p.connsMu.Lock()
	left := len(p.conns)
	p.connsMu.Unlock()
	p.log.Info("pod drained", "uid", p.pod.UID, "connections_cut", left)
	p.close()
}

// queued counts the connections waiting in the listeners' accept queues
// (TCP_INFO of a listener: tcpi_unacked is its accept queue's length).
func (p *podProxy) queued() int {
	n := 0
	for _, ln := range p.listeners {
		sc, ok := ln.(syscall.Conn)
		if !ok {
			continue
		}
		_ = pins.WithFD(sc, func(fd int) error {
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil {
				n += int(info.Unacked)
			}
			return err
		})
	}
	return n
}

func (p *podProxy) close() {
	p.cancel()
	for _, ln := range p.listeners {
		ln.Close()
	}
	if p.srv != nil {
		p.srv.Close()
	}
	if p.pool != nil {
		p.pool.Close()
	}
	p.connsMu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.connsMu.Unlock()
	p.wg.Wait()
	p.ns.stop()
}
