package ztunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/podroute"
	"github.com/warrenmesh/warren/internal/zds"
)

// Pod ports of the tunnel, as the pods' connections see them. Since
// listener handover, no tunnel listens on them: each tunnel generation
// listens on ports of its own (127.0.0.1:0 and [::1]:0 for outbound, :0 for
// inbound and HBONE) and tells the kernel (kernelMaps.setListeners), which
// steers connections to the pod's 15006 and 15008 by socket, and its
// redirected outbound connections to the current generation's port (15001
// when there is none: refused, fail closed).
const (
	OutboundPort = redirect.PortOutbound
	InboundPort  = redirect.PortInbound
)

// Options are the Tunnel's injected parts.
type Options struct {
	Logger *slog.Logger
	// Registry receives the metrics and serves them on MetricsAddr; a fresh
	// one if nil.
	Registry *prometheus.Registry
	// Pods is where the local pods come from; StaticPods(cfg.Pods) if nil.
	Pods PodSource
	// Sign, if set, gets a certificate for a local identity the
	// configuration has none for (the controller's CA, see ControlPlane);
	// the tunnel renews it at half its lifetime.
	Sign SignFunc
	// DrainGrace is how long the pods' listeners and connections are kept
	// once Run's context ends or another ztunnel took over the pods (see
	// podProxy.drain): 0 closes them at once.
	DrainGrace time.Duration
}

// Tunnel is a running ztunnel.
type Tunnel struct {
	cfg     *Config
	st      atomic.Pointer[State] // swapped whole by SetMesh
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	pods    PodSource

	roots    *identity.Roots
	sign     SignFunc
	runCtx   context.Context // Run's, for certificate renewals
	certsMu  sync.Mutex
	certs    map[identity.ID]*identity.CertSource
	loadCert func(identity.ID) (*identity.CertSource, error)
	kernel   *kernelMaps
	grace    time.Duration
	drains   sync.WaitGroup // pods replaced while Run serves

	ready  atomic.Bool
	mu     sync.Mutex
	active map[string]*podProxy // by UID
}

// New checks the configuration and loads certificates; Run starts serving.
func New(cfg *Config, o Options) (*Tunnel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Pods == nil {
		o.Pods = StaticPods(cfg.Pods)
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	pool, err := loadRoots(cfg)
	if err != nil {
		return nil, err
	}
	certs, loadCert, err := loadCerts(cfg, time.Now())
	if err != nil {
		return nil, err
	}
	t := &Tunnel{
		cfg: cfg, log: o.Logger.With("node", cfg.Node), reg: o.Registry, metrics: m, pods: o.Pods,
		roots: identity.NewRoots(pool), certs: certs, loadCert: loadCert, active: map[string]*podProxy{},
		sign: o.Sign, runCtx: context.Background(), grace: o.DrainGrace,
	}
	t.st.Store(NewState(cfg))
	if o.Sign != nil {
		static := loadCert
		t.loadCert = func(id identity.ID) (*identity.CertSource, error) {
			if _, ok := cfg.Certs[certKey(id)]; ok || cfg.CAKey != "" {
				return static(id)
			}
			return t.signed(id)
		}
	}
	return t, nil
}

// state is the mesh view in force.
func (t *Tunnel) state() *State { return t.st.Load() }

// Run serves until ctx ends, then drains (Options.DrainGrace) and closes
// every listener and connection. When the node agent says another ztunnel
// took over the pods (a rollout's new pod), it drains the same way, then
// waits, serving nothing, until ctx ends: were it to exit, it would be
// restarted and take the pods back.
func (t *Tunnel) Run(ctx context.Context) error {
	var err error
	if t.kernel, err = openKernelMaps(t.cfg.PinDir); err != nil {
		return fmt.Errorf("node agent pins %s: %w", t.cfg.PinDir, err)
	}
	defer t.kernel.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.runCtx = ctx
	servers, err := t.serveAdmin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	err = t.pods.Run(ctx, t)
	t.ready.Store(false)
	superseded := errors.Is(err, zds.ErrSuperseded)
	if superseded {
		t.log.Info("another ztunnel took over the pods, draining", "grace", t.grace)
		err = nil
	} else if t.grace > 0 {
		t.log.Info("stopping, draining", "grace", t.grace)
	}
	t.mu.Lock()
	pods := t.active
	t.active = map[string]*podProxy{}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() { p.drain(t.grace) })
	}
	wg.Wait()
	t.drains.Wait()
	if superseded {
		t.log.Info("drained; waiting to be stopped")
		<-ctx.Done()
	}
	t.log.Info("ztunnel stopped")
	return err
}

// Synced implements PodHandler: the tunnel is ready once the first set of
// pods is served.
func (t *Tunnel) Synced() {
	t.ready.Store(true)
	t.log.Info("ztunnel ready", "pods", len(t.active))
}

// AddPod implements PodHandler: it opens the pod's listeners in its netns and
// registers the inbound ones with the kernel.
func (t *Tunnel) AddPod(ctx context.Context, pod LocalPod) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.active[pod.UID]
	delete(t.active, pod.UID)
	p, err := t.startPod(ctx, pod)
	if old != nil {
		// The new proxy has taken the pod's listeners over (or failed to:
		// then the pod fails closed): the old one drains as a whole
		// tunnel would, so a replay of the pods (the agent restarted)
		// drops no connection.
		t.drains.Go(func() { old.drain(t.grace) })
	}
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	t.active[pod.UID] = p
	return nil
}

// RemovePod implements PodHandler.
func (t *Tunnel) RemovePod(_ context.Context, uid string) error {
	t.mu.Lock()
	p := t.active[uid]
	delete(t.active, uid)
	t.mu.Unlock()
	if p != nil {
		p.close()
	}
	return nil
}

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

// cert returns the certificate of a local identity, loading it the first time.
func (t *Tunnel) cert(id identity.ID) (*identity.CertSource, error) {
	t.certsMu.Lock()
	defer t.certsMu.Unlock()
	if c := t.certs[id]; c != nil {
		return c, nil
	}
	c, err := t.loadCert(id)
	if err != nil {
		return nil, err
	}
	t.certs[id] = c
	return c, nil
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
			return identity.ClientConfig(identity.TLSOptions{Certs: cert, Roots: t.roots, Authorize: identity.ExpectID(k.Dst)})
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
	srvTLS, err := identity.ServerConfig(identity.TLSOptions{Certs: cert, Roots: t.roots, Authorize: identity.ExpectTrustDomain(t.cfg.TrustDomain)})
	if err != nil {
		return nil, err
	}
	p.srv = &hbone.Server{TLSConfig: srvTLS, Handler: p.inboundHBONE, Logger: p.log, Limits: t.cfg.HBONE, IdleTimeout: hbone.DefaultIdleTimeout, OnStreamDone: p.inboundDone}

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

// outbound carries one redirected connection of the pod.
func (p *podProxy) outbound(c *net.TCPConn) {
	defer c.Close()
	t := p.t
	orig, err := t.kernel.origDst(c)
	if err != nil {
		t.metrics.refused.WithLabelValues("outbound", "no_original_destination").Inc()
		p.log.Warn("outbound: no original destination", "client", c.RemoteAddr(), "err", err)
		return
	}
	st := t.state()
	plan := Route(st, &p.pod.Workload, orig, st.next(orig))
	switch plan.Kind {
	case PlanRefuse:
		t.metrics.refused.WithLabelValues("outbound", "route").Inc()
		p.log.Info("outbound refused", "dst", orig, "reason", plan.Reason)
	case PlanPassthrough:
		up, err := p.ns.dial(p.ctx, plan.Dst, t.cfg.Mark, netip.Addr{})
		if err != nil {
			t.metrics.refused.WithLabelValues("outbound", "dial").Inc()
			p.log.Info("passthrough dial failed", "dst", plan.Dst, "err", err)
			return
		}
		cm := t.metrics.open("outbound", &p.pod.Workload, plan.Workload, plan.Service, false)
		forth, back := relayTCP(c, up)
		cm.done(forth, back)
	case PlanHBONE:
		key := hbone.Key{Src: p.pod.Identity(), Dst: plan.Workload.Identity(), Addr: plan.Tunnel}
		nc, err := p.pool.Dial(p.ctx, key, plan.Dst.String(), nil)
		if err != nil {
			t.metrics.refused.WithLabelValues("outbound", "hbone").Inc()
			p.log.Info("hbone dial failed", "dst", plan.Dst, "peer", key.Dst, "err", err)
			return
		}
		cm := t.metrics.open("outbound", &p.pod.Workload, plan.Workload, plan.Service, true)
		// Relay's "upstream" is the client here: to it is what came back.
		back, forth, _ := hbone.Relay(nc.(*hbone.Stream), c)
		cm.done(forth, back)
	}
}

// inboundHBONE decides a tunnel to this pod: the authority must be the pod,
// the policy must allow the peer, then it dials the app from inside the pod.
func (p *podProxy) inboundHBONE(ctx context.Context, req *hbone.Request) (net.Conn, error) {
	t := p.t
	if !slices.Contains(p.pod.IPs, req.Authority.Addr()) || p.ports[req.Authority.Port()] {
		t.metrics.refused.WithLabelValues("inbound", "authority").Inc()
		return nil, hbone.Forbidden(fmt.Errorf("%v is not this pod", req.Authority))
	}
	d := Authorize(t.state(), p.pod, Inbound{Peer: req.Peer, Port: req.Authority.Port()})
	if !d.Allowed {
		t.metrics.refused.WithLabelValues("inbound", "policy").Inc()
		p.log.Info("inbound denied", "peer", req.Peer, "port", req.Authority.Port(), "policy", d.Policy, "reason", d.Reason)
		return nil, hbone.Forbidden(errors.New(d.Reason))
	}
	up, err := p.dialApp(ctx, req.RemoteAddr, req.Authority)
	if err != nil {
		t.metrics.refused.WithLabelValues("inbound", "dial").Inc()
		return nil, err
	}
	return up, nil
}

// dialApp connects to the pod's app at dst from the client's address when
// the pod's routing allows (src4, src6), else from the pod's own. The
// client's address is the connection's peer: the client pod's own (the
// client's ztunnel dials from inside it), or a non-mesh client's.
func (p *podProxy) dialApp(ctx context.Context, client net.Addr, dst netip.AddrPort) (*net.TCPConn, error) {
	mark := p.t.cfg.Mark
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(client.String()); err == nil {
		a := ap.Addr().Unmap()
		d := dst.Addr().Unmap()
		if a.Is4() == d.Is4() && a != d && !a.IsLoopback() && !a.IsUnspecified() && ((a.Is4() && p.src4.Load()) || (a.Is6() && p.src6.Load())) {
			src = a
		}
	}
	if !src.IsValid() {
		return p.ns.dial(ctx, dst, mark, netip.Addr{})
	}
	c, err := p.ns.dial(ctx, dst, mark, src)
	if err != nil && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EADDRNOTAVAIL)) {
		// Not allowed here (no CAP_NET_ADMIN): the pod's own address then.
		p.srcFallback.Do(func() {
			p.log.Warn("cannot connect from clients' addresses: the app sees the pod's own address as the client's", "err", err)
		})
		p.src4.Store(false)
		p.src6.Store(false)
		return p.ns.dial(ctx, dst, mark, netip.Addr{})
	}
	return c, err
}

// inboundDone counts a finished HBONE stream.
func (p *podProxy) inboundDone(req *hbone.Request, st hbone.StreamStats) {
	if st.Status != 200 {
		return
	}
	src := p.sourceWorkload(req.RemoteAddr)
	if src != nil && src.Identity() != req.Peer {
		src = nil // the address is not the identity's: trust the identity only
	}
	cm := p.t.metrics.open("inbound", src, &p.pod.Workload, nil, true)
	cm.done(st.ToUpstream, st.FromUpstream)
}

// inboundPlain handles plaintext from outside the mesh on 15006.
func (p *podProxy) inboundPlain(c *net.TCPConn) {
	defer c.Close()
	t := p.t
	dst, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return
	}
	if p.ports[dst.Port()] {
		// Not steered here by sk_lookup but dialed at the listener's own
		// port (from the pod, or the node): it would dial itself.
		t.metrics.refused.WithLabelValues("inbound", "not_steered").Inc()
		return
	}
	d := Authorize(t.state(), p.pod, Inbound{Port: dst.Port(), Plaintext: true})
	if !d.Allowed {
		t.metrics.refused.WithLabelValues("inbound", "policy").Inc()
		p.log.Info("plaintext inbound refused", "client", c.RemoteAddr(), "port", dst.Port(), "reason", d.Reason)
		return
	}
	up, err := p.dialApp(p.ctx, c.RemoteAddr(), dst)
	if err != nil {
		t.metrics.refused.WithLabelValues("inbound", "dial").Inc()
		return
	}
	// Plaintext carries no identity: the source is named only when it is a
	// known workload outside the mesh, never as a principal.
	src := p.sourceWorkload(c.RemoteAddr())
	if src != nil && src.Enrolled {
		src = nil
	}
	cm := t.metrics.open("inbound", src, &p.pod.Workload, nil, false)
	recv, sent := relayTCP(c, up)
	cm.done(recv, sent)
}

func (p *podProxy) sourceWorkload(a net.Addr) *Workload {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return nil
	}
	return p.t.state().Workload(ap.Addr())
}

// relayTCP copies both ways between two TCP connections until both end,
// passing half-closes on. TCP to TCP, io.Copy splices in the kernel.
func relayTCP(a, b *net.TCPConn) (aToB, bToA int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		aToB, err = io.Copy(b, a)
		if err != nil {
			a.Close()
			b.Close()
			return
		}
		b.CloseWrite()
	}()
	bToA, err := io.Copy(a, b)
	if err != nil {
		a.Close()
		b.Close()
	} else {
		a.CloseWrite()
	}
	<-done
	a.Close()
	b.Close()
	return aToB, bToA
}

// SetMesh replaces the mesh view (workloads, services, policies, local
// pods' modes) the tunnel routes and authorizes with, as one atomic swap:
// a connection sees either the old view or the new one. An invalid view is
// refused whole and the old one stays in force.
func (t *Tunnel) SetMesh(m Mesh) error {
	c := *t.state().cfg
	c.Pods = slices.Clone(c.Pods)
	c.Workloads, c.Services, c.Policies = m.Workloads, m.Services, m.Policies
	if err := c.Validate(); err != nil {
		t.metrics.meshUpdates.WithLabelValues("nacked").Inc()
		return err
	}
	st := NewState(&c)
	st.modes = m.Modes
	t.st.Store(st)
	t.metrics.meshUpdates.WithLabelValues("acked").Inc()
	return nil
}

// TrustDomain is the mesh's trust domain (after defaults).
func (t *Tunnel) TrustDomain() string { return t.cfg.TrustDomain }

// Roots are the mesh roots the tunnel verifies peers with; the CA's answers
// update them.
func (t *Tunnel) Roots() *identity.Roots { return t.roots }
