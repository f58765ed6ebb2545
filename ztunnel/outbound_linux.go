package ztunnel

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/warrenmesh/warren/internal/hbone"
)

// outbound carries one redirected connection of the pod: its original
// destination from the kernel, Route's plan, then HBONE to the destination's
// ztunnel or plaintext passthrough. Its connResult counts and logs it once.
func (p *podProxy) outbound(c *net.TCPConn) {
	defer c.Close()
	t := p.t
	res := t.metrics.result(p.log, "outbound", c.RemoteAddr())
	var received, sent int64
	var relayErr error
	defer func() { res.record(received, sent, relayErr) }()
	orig, err := t.kernel.origDst(c)
	if err != nil {
		res.refuse(reasonNoOrigDst, err)
		return
	}
	st := t.state()
	plan := Route(st, &p.pod.Workload, orig, st.next(orig))
	switch plan.Kind {
	case PlanRefuse:
		res.refuse(reasonRoute, fmt.Errorf("%v: %s", orig, plan.Reason))
	case PlanPassthrough:
		up, err := p.ns.dial(p.ctx, plan.Dst, t.cfg.Mark, netip.Addr{})
		if err != nil {
			res.refuse(reasonDial, fmt.Errorf("passthrough to %v: %w", plan.Dst, err))
			return
		}
		res.open(&p.pod.Workload, p.pod.Identity(), plan.Workload, plan.Service, false, "")
		received, sent = relayTCP(c, up)
	case PlanHBONE:
		key := hbone.Key{Src: p.pod.Identity(), Dst: plan.Workload.Identity(), Addr: plan.Tunnel}
		nc, err := p.pool.Dial(p.ctx, key, plan.Dst.String(), nil)
		if err != nil {
			res.refuse(reasonHBONE, fmt.Errorf("hbone to %v as %s: %w", plan.Dst, key.Dst, err))
			return
		}
		res.open(&p.pod.Workload, p.pod.Identity(), plan.Workload, plan.Service, true, "")
		// Relay's "upstream" is the client here: to it is what came back.
		sent, received, relayErr = hbone.Relay(nc.(*hbone.Stream), c)
	case PlanWaypoint:
		// One tunnel, as the pod's own identity, to the waypoint, which
		// must prove its own; the authority is the original destination.
		key := hbone.Key{Src: p.pod.Identity(), Dst: plan.Waypoint, Addr: plan.Tunnel}
		nc, err := p.pool.Dial(p.ctx, key, plan.Dst.String(), nil)
		if err != nil {
			res.refuse(reasonHBONE, fmt.Errorf("hbone to %v through waypoint %s at %v: %w", plan.Dst, plan.Service.Waypoint, plan.Tunnel, err))
			return
		}
		res.open(&p.pod.Workload, p.pod.Identity(), plan.Workload, plan.Service, true, plan.Service.Waypoint)
		sent, received, relayErr = hbone.Relay(nc.(*hbone.Stream), c)
	}
}
