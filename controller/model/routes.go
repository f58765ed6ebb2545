package model

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/gateway"
)

// Route kinds, as in RouteRef.Kind.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// compileRoutes compiles every route against the Services, namespaces and
// ReferenceGrants of in: the accepted ones go to Routes, every route's
// Service parents' statuses to RouteParents.
func (m *Model) compileRoutes(in Inputs) {
	if len(in.HTTPRoutes) == 0 && len(in.GRPCRoutes) == 0 {
		return
	}
	ri := gateway.RouteInputs{
		Namespaces: make(map[string]*corev1.Namespace, len(in.Namespaces)),
		Services:   make(map[Key]*corev1.Service, len(in.Services)),
		Grants:     in.ReferenceGrants,
	}
	for _, ns := range in.Namespaces {
		ri.Namespaces[ns.Name] = ns
	}
	for _, svc := range in.Services {
		ri.Services[Key{Namespace: svc.Namespace, Name: svc.Name}] = svc
	}
	m.RouteParents = map[RouteRef][]gwv1.RouteParentStatus{}
	add := func(ref RouteRef, res gateway.RouteResult) {
		if len(res.Parents) > 0 {
			m.RouteParents[ref] = res.Parents
		}
		if res.Route != nil {
			m.Routes = append(m.Routes, Route{RouteRef: ref, Proto: res.Route})
		}
	}
	for _, r := range in.HTTPRoutes {
		add(RouteRef{Kind: KindHTTPRoute, Namespace: r.Namespace, Name: r.Name}, gateway.CompileHTTPRoute(r, ri))
	}
	for _, r := range in.GRPCRoutes {
		add(RouteRef{Kind: KindGRPCRoute, Namespace: r.Namespace, Name: r.Name}, gateway.CompileGRPCRoute(r, ri))
	}
	slices.SortFunc(m.Routes, func(a, b Route) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}
