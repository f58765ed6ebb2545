package ztunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

// DefaultMark is the SO_MARK of the ztunnel's own sockets (the agent's default too).
const DefaultMark = redirect.DefaultTunnelMark

// State is what the ztunnel knows, indexed for the hot path. It is immutable
// once built; a new configuration builds a new State.
type State struct {
	cfg      *Config
	byIP     map[netip.Addr]*Workload
	local    map[netip.Addr]*LocalPod
	services map[netip.Addr]*serviceState
	policies []policy.Policy // cfg.Policies, for internal/policy
	// modes are local pods' PeerAuthentication modes by pod UID, as the
	// controller resolved them (Mesh.Modes).
	modes map[string]Mode
}

// modeOf returns the mode in force for a local pod: its own (static
// configuration), else the controller's for its UID, else the default.
func (st *State) modeOf(p *LocalPod) Mode {
	if p.Mode != "" {
		return p.Mode
	}
	if m, ok := st.modes[p.UID]; ok && m != "" {
		return m
	}
	return st.cfg.Mode
}

type serviceState struct {
	*Service
	next atomic.Uint64 // round robin over ready endpoints
}

// NewState indexes a validated Config.
func NewState(c *Config) *State {
	st := &State{cfg: c, byIP: map[netip.Addr]*Workload{}, local: map[netip.Addr]*LocalPod{}, services: map[netip.Addr]*serviceState{},
		policies: evalPolicies(c.Policies)}
	for i := range c.Workloads {
		for _, ip := range c.Workloads[i].IPs {
			st.byIP[ip.Unmap()] = &c.Workloads[i]
		}
	}
	for i := range c.Pods {
		for _, ip := range c.Pods[i].IPs {
			st.byIP[ip.Unmap()] = &c.Pods[i].Workload
			st.local[ip.Unmap()] = &c.Pods[i]
		}
	}
	for i := range c.Services {
		ss := &serviceState{Service: &c.Services[i]}
		for _, v := range c.Services[i].VIPs {
			st.services[v.Unmap()] = ss
		}
	}
	return st
}

// Workload returns the workload with this address, or nil.
func (st *State) Workload(ip netip.Addr) *Workload { return st.byIP[ip.Unmap()] }

// LocalPod returns the local pod with this address, or nil.
func (st *State) LocalPod(ip netip.Addr) *LocalPod { return st.local[ip.Unmap()] }

// PlanKind says how an outbound connection travels.
type PlanKind int

// Plan kinds.
const (
	// PlanRefuse: the connection is closed.
	PlanRefuse PlanKind = iota
	// PlanHBONE: over mTLS to the destination pod's ztunnel.
	PlanHBONE
	// PlanPassthrough: plaintext to a destination outside the mesh, or to
	// the source pod itself (reached through a Service), which never leaves
	// its netns.
	PlanPassthrough
)

func (k PlanKind) String() string {
	return [...]string{"refuse", "hbone", "passthrough"}[k]
}

// Plan is the routing decision for one outbound connection.
type Plan struct {
	Kind PlanKind
	// Dst is where the bytes go: the endpoint (ip:targetPort) for a
	// service, the original destination otherwise.
	Dst netip.AddrPort
	// Tunnel is the HBONE address (<pod IP>:15008) for PlanHBONE.
	Tunnel netip.AddrPort
	// Workload is the destination workload, nil outside the mesh.
	Workload *Workload
	// Service is the service whose VIP was dialed, if any.
	Service *Service
	// Reason explains a refusal.
	Reason string
}

// Route decides where an outbound connection from src to orig goes: a
// service VIP is resolved to a ready endpoint (round robin, seq picks), an
// enrolled destination is reached over HBONE at <its IP>:15008, anything
// else passes through in plaintext unless the configuration refuses it.
func Route(st *State, src *Workload, orig netip.AddrPort, seq uint64) Plan {
	dst := netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())
	var p Plan
	if ss := st.services[dst.Addr()]; ss != nil {
		p.Service = ss.Service
		i := slices.IndexFunc(ss.Ports, func(sp ServicePort) bool { return sp.Port == dst.Port() })
		if i < 0 {
			return Plan{Kind: PlanRefuse, Service: ss.Service, Reason: fmt.Sprintf("service %s/%s has no port %d", ss.Namespace, ss.Name, dst.Port())}
		}
		sp := ss.Ports[i]
		port := sp.TargetPort
		if port == 0 {
			port = sp.Port
		}
		// Ready endpoints that serve the port (a named target port is each
		// endpoint's own number).
		var ready []netip.AddrPort
		for _, e := range ss.Endpoints {
			if !e.Ready {
				continue
			}
			p := port
			if sp.TargetPortName != "" {
				if p = e.Ports[sp.TargetPortName]; p == 0 {
					continue
				}
			}
			ready = append(ready, netip.AddrPortFrom(e.IP.Unmap(), p))
		}
		if len(ready) == 0 {
			return Plan{Kind: PlanRefuse, Service: ss.Service, Reason: fmt.Sprintf("service %s/%s has no ready endpoint", ss.Namespace, ss.Name)}
		}
		dst = ready[seq%uint64(len(ready))]
	}
	p.Dst = dst
	if src != nil && slices.Contains(src.IPs, dst.Addr()) {
		// As the pod's own connections to its own address, this one stays
		// in its netns: HBONE to itself would find no tunnel listener
		// (sk_lookup leaves a pod's connections to itself alone).
		p.Kind = PlanPassthrough
		p.Workload = src
		return p
	}
	w := st.byIP[dst.Addr()]
	if w != nil && w.Enrolled {
		p.Kind = PlanHBONE
		p.Workload = w
		p.Tunnel = netip.AddrPortFrom(dst.Addr(), hbone.Port)
		return p
	}
	p.Workload = w
	if st.cfg.NonMesh == NonMeshRefuse {
		p.Kind = PlanRefuse
		p.Reason = fmt.Sprintf("%v is outside the mesh and nonMesh is refuse", dst)
		return p
	}
	p.Kind = PlanPassthrough
	return p
}

// Decision is the outcome of Authorize.
type Decision = policy.Decision

// Inbound is an inbound connection as the destination's ztunnel sees it.
type Inbound struct {
	// Peer is the source's verified identity; zero for plaintext.
	Peer identity.ID
	// Port is the destination workload's port.
	Port uint16
	// Plaintext: arrived on 15006 rather than over HBONE.
	Plaintext bool
}

// Authorize decides an inbound connection to the local pod dst: plaintext is
// refused in STRICT mode; then the policies decide with internal/policy's
// semantics, those of controller/model.Authorize too: any matching DENY
// refuses (deny wins); then, if ALLOW policies apply to dst, one must match;
// with none, it is allowed.
func Authorize(st *State, dst *LocalPod, c Inbound) Decision {
	if c.Plaintext && st.modeOf(dst) == ModeStrict {
		return Decision{Reason: "plaintext refused: mTLS mode STRICT"}
	}
	return policy.Authorize(st.policies, st.cfg.SystemNamespace,
		policy.Target{Namespace: dst.Namespace, Labels: dst.Labels},
		policy.Conn{Peer: c.Peer, Port: c.Port})
}

// evalPolicies converts validated configuration policies for internal/policy.
func evalPolicies(ps []Policy) []policy.Policy {
	out := make([]policy.Policy, len(ps))
	for i, p := range ps {
		ep := policy.Policy{Namespace: p.Namespace, Name: p.Name, Selector: p.Selector, Action: p.Action}
		for _, r := range p.Rules {
			var er policy.Rule
			for _, s := range r.From {
				er.From = append(er.From, policy.Source{Principals: s.principals, Namespaces: s.Namespaces})
			}
			for _, d := range r.To {
				er.To = append(er.To, policy.Destination{Ports: d.Ports})
			}
			ep.Rules = append(ep.Rules, er)
		}
		out[i] = ep
	}
	return out
}

// next returns the round-robin sequence number for a connection to dst: the
// service's counter when dst is a service VIP.
func (st *State) next(dst netip.AddrPort) uint64 {
	if ss := st.services[dst.Addr().Unmap()]; ss != nil {
		return ss.next.Add(1) - 1
	}
	return 0
}
