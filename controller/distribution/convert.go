package distribution

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/policy"
	"github.com/warrenmesh/warren/internal/policy/policypb"
)

func workloadResource(w model.NodeWorkload) *meshv1.Resource {
	k := "workload/" + string(w.UID)
	return &meshv1.Resource{Key: k, Kind: &meshv1.Resource_Workload{Workload: &meshv1.Workload{
		Uid: string(w.UID), Namespace: w.Namespace, Name: w.Name, ServiceAccount: w.ServiceAccount,
		Identity: w.Identity.String(), Ips: ips(w.IPs), Labels: maps.Clone(w.Labels), MtlsMode: mode(w.Mode),
	}}}
}

func peerResource(p model.Peer) *meshv1.Resource {
	k := "peer/" + string(p.UID)
	return &meshv1.Resource{Key: k, Kind: &meshv1.Resource_Peer{Peer: &meshv1.Peer{
		Uid: string(p.UID), Namespace: p.Namespace, Name: p.Name, Node: p.Node, Ips: ips(p.IPs), Identity: p.Identity.String(),
	}}}
}

func serviceKey(s *model.Service) string { return "service/" + s.Namespace + "/" + s.Name }

func serviceResource(s model.Service) *meshv1.Resource {
	k := serviceKey(&s)
	ps := &meshv1.Service{Namespace: s.Namespace, Name: s.Name, Vips: ips(s.VIPs), Waypoint: s.Waypoint}
	for _, p := range s.Ports {
		ps.Ports = append(ps.Ports, &meshv1.ServicePort{Name: p.Name, Port: uint32(p.Port), TargetPort: uint32(p.TargetPort), TargetPortName: p.TargetPortName,
			AppProtocol: p.AppProtocol})
	}
	for _, e := range s.Endpoints {
		pe := &meshv1.Endpoint{Ip: e.Addr.String(), Node: e.Node, WorkloadUid: string(e.WorkloadUID), Ready: e.Ready, Enrolled: e.Enrolled}
		if !e.Identity.IsZero() {
			pe.Identity = e.Identity.String()
		}
		if len(e.Ports) > 0 {
			pe.Ports = make(map[string]uint32, len(e.Ports))
			for n, p := range e.Ports {
				pe.Ports[n] = uint32(p)
			}
		}
		ps.Endpoints = append(ps.Endpoints, pe)
	}
	return &meshv1.Resource{Key: k, Kind: &meshv1.Resource_Service{Service: ps}}
}

// routeKey is "route/<namespace>/<name>" for an HTTPRoute and
// "grpcroute/<namespace>/<name>" for a GRPCRoute. A ztunnel ignores these
// kinds; waypoints serve them.
func routeKey(r *model.Route) string {
	prefix := "route/"
	if r.Kind == model.KindGRPCRoute {
		prefix = "grpcroute/"
	}
	return prefix + r.Namespace + "/" + r.Name
}

func routeResource(r *model.Route) *meshv1.Resource {
	return &meshv1.Resource{Key: routeKey(r), Kind: &meshv1.Resource_Route{Route: r.Proto}}
}

func policyResource(p *policy.Policy) *meshv1.Resource {
	k := "policy/" + p.Namespace + "/" + p.Name
	return &meshv1.Resource{Key: k, Kind: &meshv1.Resource_Policy{Policy: policypb.ToProto(p)}}
}

func ips(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

func mode(m v1alpha1.MTLSMode) meshv1.MTLSMode {
	switch m {
	case v1alpha1.ModeStrict:
		return meshv1.MTLSMode_MTLS_MODE_STRICT
	case v1alpha1.ModePermissive:
		return meshv1.MTLSMode_MTLS_MODE_PERMISSIVE
	}
	return meshv1.MTLSMode_MTLS_MODE_UNSPECIFIED
}

// The equalities below tell whether a model value converts to the same
// resource as an earlier one, without converting it: they compare every
// field of the value (TestEqualitiesCoverEveryField keeps them complete).

func peerEqual(a, b *model.Peer) bool {
	return a.UID == b.UID && a.Namespace == b.Namespace && a.Name == b.Name && a.Node == b.Node &&
		a.Identity == b.Identity && slices.Equal(a.IPs, b.IPs)
}

func serviceEqual(a, b *model.Service) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && slices.Equal(a.VIPs, b.VIPs) && a.Waypoint == b.Waypoint &&
		slices.Equal(a.Ports, b.Ports) && slices.EqualFunc(a.Endpoints, b.Endpoints, endpointEqual)
}

func endpointEqual(a, b model.Endpoint) bool {
	return a.Addr == b.Addr && a.Node == b.Node && a.WorkloadUID == b.WorkloadUID && a.Ready == b.Ready &&
		a.Enrolled == b.Enrolled && a.Identity == b.Identity && maps.Equal(a.Ports, b.Ports)
}

// workloadEqual compares a local workload; its mode is compared apart.
func workloadEqual(a, b *model.Workload) bool {
	return a.UID == b.UID && a.Namespace == b.Namespace && a.Name == b.Name && a.Node == b.Node &&
		a.ServiceAccount == b.ServiceAccount && a.Identity == b.Identity && slices.Equal(a.IPs, b.IPs) &&
		maps.Equal(a.Labels, b.Labels) && a.Running == b.Running && a.Enrolled == b.Enrolled
}

// policyOrder is the model's order of policies: by namespace and name.
func policyOrder(a, b *policy.Policy) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

func policyEqual(a, b *policy.Policy) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Action == b.Action &&
		(a.Selector == nil) == (b.Selector == nil) && maps.Equal(a.Selector, b.Selector) &&
		slices.EqualFunc(a.Rules, b.Rules, ruleEqual)
}

func ruleEqual(a, b policy.Rule) bool {
	return slices.EqualFunc(a.From, b.From, func(x, y policy.Source) bool {
		return slices.Equal(x.Principals, y.Principals) && slices.Equal(x.Namespaces, y.Namespaces)
	}) && slices.EqualFunc(a.To, b.To, func(x, y policy.Destination) bool { return slices.Equal(x.Ports, y.Ports) })
}
