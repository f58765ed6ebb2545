package ztunnel

import (
	"net"
	"net/netip"

	"github.com/warrenmesh/warren/internal/hbone"
)

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
