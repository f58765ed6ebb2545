package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/hbone"
)

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
