package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
)

// inboundHBONE decides a tunnel to this pod: the authority must be the pod;
// a waypoint's tunnel stands for the caller its headers name (from any
// other peer they are ignored); a pod behind a waypoint takes only its
// waypoint's tunnels; the policy must allow the caller; then it dials the
// app from inside the pod, from the caller's address. The stream's
// connResult is recorded by inboundDone, which hbone.Server calls for every
// stream, once it ends.
func (p *podProxy) inboundHBONE(ctx context.Context, req *hbone.Request) (net.Conn, error) {
	t := p.t
	res := t.metrics.result(p.log, "inbound", req.RemoteAddr)
	is := &inboundStream{res: res}
	p.streams.Store(req, is)
	if !slices.Contains(p.pod.IPs, req.Authority.Addr()) || p.ports[req.Authority.Port()] {
		err := fmt.Errorf("%v is not this pod", req.Authority)
		res.refuse(reasonAuthority, err)
		return nil, hbone.Forbidden(err)
	}
	in := Inbound{Peer: req.Peer, Port: req.Authority.Port()}
	client := req.RemoteAddr
	via := ""
	st := t.state()
	if st.IsWaypoint(req.Peer) {
		caller, addr, err := hbone.Caller(req.Header)
		if err != nil {
			err = fmt.Errorf("waypoint %s: %w", req.Peer, err)
			res.refuse(reasonBadRequest, err)
			return nil, &hbone.StatusError{Code: http.StatusBadRequest, Err: err}
		}
		in.Peer, in.Via = caller, req.Peer
		via = req.Peer.Namespace + "/" + req.Peer.ServiceAccount
		if addr.IsValid() {
			client = net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0))
		}
	}
	if why := WaypointGate(st, p.pod, in); why != "" {
		res.refuse(reasonWaypoint, fmt.Errorf("peer %s, port %d: %s", req.Peer, in.Port, why))
		return nil, hbone.Forbidden(errors.New(why))
	}
	if d := Authorize(st, p.pod, in); !d.Allowed {
		res.refuse(reasonPolicy, fmt.Errorf("peer %s, port %d: %s", in.Peer, in.Port, decisionReason(d)))
		return nil, hbone.Forbidden(errors.New(d.Reason))
	}
	up, err := p.dialApp(ctx, client, req.Authority)
	if err != nil {
		res.refuse(reasonDial, err)
		return nil, err
	}
	is.auth = &authorizedConn{pod: p.pod, in: in, res: res, close: func() { up.Close() }}
	if why := t.admit(st, is.auth); why != "" {
		is.auth = nil
		up.Close()
		res.refuse(reasonPolicy, fmt.Errorf("peer %s, port %d: %s", in.Peer, in.Port, why))
		return nil, hbone.Forbidden(errors.New(why))
	}
	res.open(p.sourceWorkload(client, in.Peer), in.Peer, &p.pod.Workload, nil, true, via)
	return up, nil
}

// inboundStream is what inboundHBONE leaves for inboundDone.
type inboundStream struct {
	res  *connResult
	auth *authorizedConn // registered while the tunnel is open
}

// inboundDone records a finished HBONE stream: inboundHBONE's outcome, or,
// for a stream hbone.Server refused before asking it, a bad request.
func (p *podProxy) inboundDone(req *hbone.Request, st hbone.StreamStats) {
	v, ok := p.streams.LoadAndDelete(req)
	if !ok {
		res := p.t.metrics.result(p.log, "inbound", req.RemoteAddr)
		res.refuse(reasonBadRequest, st.Err)
		res.record(0, 0, nil)
		return
	}
	is := v.(*inboundStream)
	if is.auth != nil {
		p.t.conns.remove(is.auth)
	}
	is.res.record(st.ToUpstream, st.FromUpstream, st.Err)
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

// inboundPlain handles plaintext from outside the mesh on 15006.
func (p *podProxy) inboundPlain(c *net.TCPConn) {
	defer c.Close()
	t := p.t
	res := t.metrics.result(p.log, "inbound", c.RemoteAddr())
	var received, sent int64
	defer func() { res.record(received, sent, nil) }()
	dst, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		res.refuse(reasonNotSteered, err)
		return
	}
	if p.ports[dst.Port()] {
		// Not steered here by sk_lookup but dialed at the listener's own
		// port (from the pod, or the node): it would dial itself.
		res.refuse(reasonNotSteered, fmt.Errorf("dialed at the listener's own port %d", dst.Port()))
		return
	}
	in := Inbound{Port: dst.Port(), Plaintext: true}
	st := t.state()
	if why := WaypointGate(st, p.pod, in); why != "" {
		res.refuse(reasonWaypoint, fmt.Errorf("plaintext, port %d: %s", in.Port, why))
		return
	}
	if d := Authorize(st, p.pod, in); !d.Allowed {
		res.refuse(reasonPolicy, fmt.Errorf("plaintext, port %d: %s", in.Port, decisionReason(d)))
		return
	}
	up, err := p.dialApp(p.ctx, c.RemoteAddr(), dst)
	if err != nil {
		res.refuse(reasonDial, err)
		return
	}
	defer up.Close()
	auth := &authorizedConn{pod: p.pod, in: in, res: res, close: func() { c.Close(); up.Close() }}
	if why := t.admit(st, auth); why != "" {
		res.refuse(reasonPolicy, fmt.Errorf("plaintext, port %d: %s", in.Port, why))
		return
	}
	defer t.conns.remove(auth)
	// Plaintext carries no identity: the source is named only when it is a
	// known workload outside the mesh, never as a principal.
	src := p.sourceWorkload(c.RemoteAddr(), identity.ID{})
	res.open(src, identity.ID{}, &p.pod.Workload, nil, false, "")
	received, sent = relayTCP(c, up)
}

// sourceWorkload is the workload at a connection's source address, kept only
// when it is who the connection proved to be: the enrolled workload of
// peer's identity over mTLS, a workload outside the mesh in plaintext (zero
// peer). The principal of telemetry is peer itself, found here or not.
func (p *podProxy) sourceWorkload(a net.Addr, peer identity.ID) *Workload {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return nil
	}
	w := p.t.state().Workload(ap.Addr())
	switch {
	case w == nil:
		return nil
	case peer.IsZero() && w.Enrolled, !peer.IsZero() && (!w.Enrolled || w.Identity() != peer):
		return nil
	}
	return w
}
