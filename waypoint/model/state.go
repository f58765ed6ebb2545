package model

import (
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/identity"
)

// State is a waypoint's compiled configuration. It is immutable once
// Compile returns it: the engine swaps whole States.
type State struct {
	// Self is the waypoint, "<namespace>/<name>".
	Self string
	// fronted are the ports of Services whose waypoint is Self, by VIP:port.
	fronted  map[netip.AddrPort]*Port
	services map[string]*Service
	// Workloads by UID, for telemetry names.
	Workloads map[string]*Workload
}

// Lookup returns the fronted Service port a tunnel's :authority names.
func (s *State) Lookup(authority netip.AddrPort) (*Port, bool) {
	p, ok := s.fronted[authority]
	return p, ok
}

// Service returns a Service by "<namespace>/<name>".
func (s *State) Service(key string) (*Service, bool) {
	svc, ok := s.services[key]
	return svc, ok
}

// Services returns every Service, fronted or not, in no order.
func (s *State) Services() []*Service {
	out := make([]*Service, 0, len(s.services))
	for _, svc := range s.services {
		out = append(out, svc)
	}
	return out
}

// Workload is a pod behind an endpoint: names for telemetry.
type Workload struct {
	UID, Namespace, Name string
	Identity             identity.ID
}

// Service is a Kubernetes Service the waypoint fronts or sends to.
type Service struct {
	Namespace, Name string
	VIPs            []netip.Addr
	Ports           []*Port
	Endpoints       []*Endpoint
	// Fronted: traffic to its VIPs comes to this waypoint.
	Fronted bool
}

// Key is "<namespace>/<name>".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Port returns the Service's port with this number.
func (s *Service) Port(n uint16) (*Port, bool) {
	for _, p := range s.Ports {
		if p.Number == n {
			return p, true
		}
	}
	return nil, false
}

// Port is one port of a Service.
type Port struct {
	Service  *Service
	Number   uint16
	Name     string
	Protocol Protocol
	// TargetPort (Number when zero) or, when set, TargetPortName, which each
	// endpoint maps to its own number.
	TargetPort     uint16
	TargetPortName string
	// Routes decides requests on a fronted HTTP port; a port no route
	// attaches to has the default table: every request to the Service
	// itself on this port.
	Routes *Table
}

// EndpointPort is the port an endpoint serves this Service port on; false
// when the endpoint has no such named port.
func (p *Port) EndpointPort(e *Endpoint) (uint16, bool) {
	if p.TargetPortName != "" {
		n, ok := e.Ports[p.TargetPortName]
		return n, ok && n != 0
	}
	if p.TargetPort != 0 {
		return p.TargetPort, true
	}
	return p.Number, true
}

// Endpoint is one pod of a Service.
type Endpoint struct {
	Addr  netip.Addr
	Ready bool
	// Enrolled endpoints are reached over HBONE and must prove Identity;
	// others get plain TCP.
	Enrolled bool
	Identity identity.ID
	Ports    map[string]uint16
	// Workload is nil when the configuration does not name it.
	Workload *Workload
}

// Rule is a compiled route rule.
type Rule struct {
	// Route is "<namespace>/<name>" of the HTTPRoute or GRPCRoute, with
	// "#<rule name or index>": the route label of telemetry. The default
	// rule of a port without routes is "default".
	Route string
	// Kind is RouteHTTP or RouteGRPC.
	Kind RouteKind
	// Filters in order; at most one redirect or rewrite.
	RequestHeaders  *HeaderModifier
	ResponseHeaders *HeaderModifier
	Redirect        *Redirect
	Rewrite         *Rewrite
	Mirrors         []Mirror
	Backends        []Backend
	// RequestTimeout bounds the whole exchange, retries included;
	// BackendTimeout each attempt. Zero: none.
	RequestTimeout, BackendTimeout time.Duration
	Retry                          RetryPolicy
}

// RouteKind tells HTTPRoutes from GRPCRoutes.
type RouteKind int

const (
	RouteHTTP RouteKind = iota + 1
	RouteGRPC
)

// RetryPolicy is a rule's retry: the data of package retry's decisions.
type RetryPolicy struct {
	// Attempts are retries after the first attempt; 0: no retry.
	Attempts int
	// Codes are the response statuses to retry.
	Codes []int
	// Backoff is the base of the jittered exponential backoff.
	Backoff time.Duration
}

// Backend is a weighted backendRef. Port is nil when the reference does not
// resolve: requests that pick it get 500 (Gateway API).
type Backend struct {
	Ref     string // "<namespace>/<name>:<port>", for logs
	Service *Service
	Port    *Port
	Weight  int32
}

// Mirror sends a copy of Percent % of the requests to a backend.
type Mirror struct {
	Backend Backend
	Percent uint32
}
