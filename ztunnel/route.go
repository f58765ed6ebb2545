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
	// byName: services by "<namespace>/<name>" (a waypoint's own Service).
	byName map[string]*serviceState
	// bound: the waypoint-bound services an address is an endpoint of.
	bound map[netip.Addr][]*serviceState
	// waypoints: the identities of the waypoints services name; only they
	// are trusted with a caller's headers.
	waypoints map[identity.ID]bool
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
		byName: map[string]*serviceState{}, bound: map[netip.Addr][]*serviceState{}, waypoints: map[identity.ID]bool{}}
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
		st.byName[ss.Namespace+"/"+ss.Name] = ss
		if !ss.bound() {
			continue
		}
		st.waypoints[ss.waypointID] = true
		// Every address of an endpoint's workload (both families of a
		// dual-stack pod) is behind the waypoint.
		for _, e := range ss.Endpoints {
			addrs := []netip.Addr{e.IP}
			if w := st.byIP[e.IP.Unmap()]; w != nil {
				addrs = w.IPs
			}
			for _, a := range addrs {
				if !slices.Contains(st.bound[a.Unmap()], ss) {
					st.bound[a.Unmap()] = append(st.bound[a.Unmap()], ss)
				}
			}
		}
	}
	return st
}

// bound says whether the service's traffic goes through a waypoint: it
// names one, and is not that waypoint's own Service (which would loop).
func (s *Service) bound() bool {
	return s.Waypoint != "" && s.Waypoint != s.Namespace+"/"+s.Name
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
	// PlanWaypoint: over HBONE to a pod of the destination's waypoint,
	// which must prove Plan.Waypoint, with the original destination (Dst)
	// as :authority; the waypoint picks the endpoint.
	PlanWaypoint
)

func (k PlanKind) String() string {
	return [...]string{"refuse", "hbone", "passthrough", "waypoint"}[k]
}

// Plan is the routing decision for one outbound connection.
type Plan struct {
	Kind PlanKind
	// Dst is where the bytes go: the endpoint (ip:targetPort) for a
	// service, the original destination otherwise.
	Dst netip.AddrPort
	// Tunnel is the HBONE address (<pod IP>:15008) for PlanHBONE, the
	// waypoint pod's for PlanWaypoint.
	Tunnel netip.AddrPort
	// Waypoint is the identity the waypoint pod must prove (PlanWaypoint).
	Waypoint identity.ID
	// Workload is the destination workload, nil outside the mesh.
	Workload *Workload
	// Service is the service whose VIP was dialed, if any.
	Service *Service
	// Reason explains a refusal.
	Reason string
}

// Route decides where an outbound connection from src to orig goes: the VIP
// of a waypoint-bound service, or the address of one of its endpoints, goes
// to the waypoint (never around it: no ready waypoint pod refuses); another
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
		if ss.bound() && !fromWaypoint(src, ss) {
			return st.viaWaypoint(ss, dst, nil, seq)
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
	if p.Service == nil {
		// A pod addressed directly is behind its service's waypoint too.
		if bs := st.bound[dst.Addr()]; len(bs) > 0 && !fromWaypoint(src, bs[0]) {
			return st.viaWaypoint(bs[0], dst, w, seq)
		}
	}
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

// fromWaypoint says whether src is ss's waypoint itself (were it enrolled),
// whose own connections go to the service directly.
func fromWaypoint(src *Workload, ss *serviceState) bool {
	return src != nil && src.Enrolled && src.Identity() == ss.waypointID
}

// viaWaypoint plans the tunnel to a ready pod of ss's waypoint (round robin
// by seq) for the original destination dst (w: its workload, if addressed
// directly); refused when the waypoint's Service is unknown or has no ready
// pod, since going around it would skip its policy.
func (st *State) viaWaypoint(ss *serviceState, dst netip.AddrPort, w *Workload, seq uint64) Plan {
	p := Plan{Kind: PlanRefuse, Dst: dst, Workload: w, Service: ss.Service, Waypoint: ss.waypointID}
	ws := st.byName[ss.Waypoint]
	if ws == nil {
		p.Reason = fmt.Sprintf("waypoint %s of service %s/%s is not in the configuration", ss.Waypoint, ss.Namespace, ss.Name)
		return p
	}
	var ready []netip.Addr
	for _, e := range ws.Endpoints {
		if e.Ready {
			ready = append(ready, e.IP.Unmap())
		}
	}
	if len(ready) == 0 {
		p.Reason = fmt.Sprintf("waypoint %s of service %s/%s has no ready endpoint", ss.Waypoint, ss.Namespace, ss.Name)
		return p
	}
	p.Kind = PlanWaypoint
	p.Tunnel = netip.AddrPortFrom(ready[seq%uint64(len(ready))], hbone.Port)
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
	// Via is the waypoint that carried the connection, whose identity the
	// tunnel's handshake proved; Peer is then the caller it vouches for
	// (X-Warren-Caller). Zero for a direct connection.
	Via identity.ID
}

// WaypointGate says why dst may not take the inbound connection c ("" if it
// may): a pod behind a waypoint-bound service takes only tunnels its
// waypoint carried, neither plaintext (whatever the mTLS mode) nor a
// client's direct tunnel, which would skip the waypoint's L7 policy.
func WaypointGate(st *State, dst *LocalPod, c Inbound) string {
	var names []string
	for _, a := range dst.IPs {
		for _, ss := range st.bound[a.Unmap()] {
			if !c.Via.IsZero() && c.Via == ss.waypointID {
				return ""
			}
			if !slices.Contains(names, ss.Waypoint) {
				names = append(names, ss.Waypoint)
			}
		}
	}
	switch {
	case len(names) == 0:
		return ""
	case c.Plaintext:
		return fmt.Sprintf("plaintext refused: behind waypoint %v", names)
	case !c.Via.IsZero():
		return fmt.Sprintf("carried by %s, not by its waypoint %v", c.Via, names)
	}
	return fmt.Sprintf("not through its waypoint %v", names)
}

// IsWaypoint says whether id is the identity of a waypoint some service
// names: only such a peer is trusted with a caller's headers.
func (st *State) IsWaypoint(id identity.ID) bool { return st.waypoints[id] }

// Authorize decides an inbound connection to the local pod dst: plaintext is
// refused in STRICT mode; then the policies decide with internal/policy's
// semantics, those of controller/model.Authorize too: any matching DENY
// refuses (deny wins); then, if ALLOW policies apply to dst, one must match;
// with none, it is allowed.
func Authorize(st *State, dst *LocalPod, c Inbound) Decision {
	if c.Plaintext && st.modeOf(dst) == ModeStrict {
		return Decision{Reason: "plaintext refused: mTLS mode STRICT"}
	}
	return policy.Authorize(st.cfg.Policies, st.cfg.SystemNamespace,
		policy.Target{Namespace: dst.Namespace, Labels: dst.Labels},
		policy.Conn{Peer: c.Peer, Port: c.Port})
}

// next returns the round-robin sequence number for a connection to dst: the
// service's counter when dst is a service VIP, or the endpoint of a
// waypoint-bound one (which spreads over the waypoint's pods).
func (st *State) next(dst netip.AddrPort) uint64 {
	if ss := st.services[dst.Addr().Unmap()]; ss != nil {
		return ss.next.Add(1) - 1
	}
	if bs := st.bound[dst.Addr().Unmap()]; len(bs) > 0 {
		return bs[0].next.Add(1) - 1
	}
	return 0
}
