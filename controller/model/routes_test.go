package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/gateway"
)

func serviceParent(name string) gwv1.ParentReference {
	return gwv1.ParentReference{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
}

func backend(ns, name string, port, weight int32) gwv1.BackendRef {
	b := gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr(gwv1.PortNumber(port))}, Weight: ptr(weight)}
	if ns != "" {
		b.Namespace = ptr(gwv1.Namespace(ns))
	}
	return b
}

func httpRoute(name string, parents []gwv1.ParentReference, backends ...gwv1.BackendRef) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 3}}
	r.Spec.ParentRefs = parents
	rule := gwv1.HTTPRouteRule{}
	for _, b := range backends {
		rule.BackendRefs = append(rule.BackendRefs, gwv1.HTTPBackendRef{BackendRef: b})
	}
	r.Spec.Rules = []gwv1.HTTPRouteRule{rule}
	return r
}

func routeModelInputs() Inputs {
	svc := func(ns, name string, port int32) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.1"}, Ports: []corev1.ServicePort{{Name: "http", Port: port}}}}
	}
	grpc := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{serviceParent("api")}},
			Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backend("", "api", 9090, 1)}}}}}}
	return Inputs{
		Namespaces: []*corev1.Namespace{ns("shop", useWaypoint("wp")), ns("other", nil)},
		Services:   []*corev1.Service{svc("shop", "web", 80), svc("shop", "web-v1", 8080), svc("shop", "web-v2", 8080), svc("shop", "api", 9090), svc("other", "db", 5432)},
		HTTPRoutes: []*gwv1.HTTPRoute{
			// in reverse order: the model sorts
			httpRoute("z-split", []gwv1.ParentReference{serviceParent("web")}, backend("", "web-v1", 8080, 90), backend("", "web-v2", 8080, 10)),
			httpRoute("bad", []gwv1.ParentReference{serviceParent("missing")}, backend("other", "db", 5432, 1)),
			// a Gateway parent: not a mesh route, no status of ours
			httpRoute("north-south", []gwv1.ParentReference{{Name: "ingress"}}, backend("", "web", 80, 1)),
		},
		GRPCRoutes: []*gwv1.GRPCRoute{grpc},
	}
}

func TestRoutes(t *testing.T) {
	m := Build(routeModelInputs())
	var got []RouteRef
	for _, r := range m.Routes {
		got = append(got, r.RouteRef)
	}
	want := []RouteRef{{KindGRPCRoute, "shop", "api"}, {KindHTTPRoute, "shop", "z-split"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("routes %v, want %v (the rejected and the Gateway's are not pushed)", got, want)
	}
	split := m.Routes[1].Proto
	if bs := split.Rules[0].Backends; len(bs) != 2 || bs[0].Name != "web-v1" || bs[0].GetWeight() != 90 || bs[1].Name != "web-v2" || bs[1].GetWeight() != 10 {
		t.Errorf("split backends %v", bs)
	}
	if ps := split.Parents; len(ps) != 1 || ps[0].Namespace != "shop" || ps[0].Name != "web" {
		t.Errorf("split parents %v", ps)
	}

	for _, tc := range []struct {
		ref            RouteRef
		accepted       metav1.ConditionStatus
		acceptedReason gwv1.RouteConditionReason
		resolved       metav1.ConditionStatus
		resolvedReason gwv1.RouteConditionReason
	}{
		{RouteRef{KindHTTPRoute, "shop", "z-split"}, metav1.ConditionTrue, gwv1.RouteReasonAccepted, metav1.ConditionTrue, gwv1.RouteReasonResolvedRefs},
		{RouteRef{KindGRPCRoute, "shop", "api"}, metav1.ConditionTrue, gwv1.RouteReasonAccepted, metav1.ConditionTrue, gwv1.RouteReasonResolvedRefs},
		{RouteRef{KindHTTPRoute, "shop", "bad"}, metav1.ConditionFalse, gwv1.RouteReasonNoMatchingParent, metav1.ConditionFalse, gwv1.RouteReasonRefNotPermitted},
	} {
		ps := m.RouteParents[tc.ref]
		if len(ps) != 1 || ps[0].ControllerName != gateway.ControllerName {
			t.Errorf("%v: parents %+v", tc.ref, ps)
			continue
		}
		a := meta.FindStatusCondition(ps[0].Conditions, string(gwv1.RouteConditionAccepted))
		r := meta.FindStatusCondition(ps[0].Conditions, string(gwv1.RouteConditionResolvedRefs))
		if a == nil || a.Status != tc.accepted || a.Reason != string(tc.acceptedReason) {
			t.Errorf("%v: Accepted %+v, want %s %s", tc.ref, a, tc.accepted, tc.acceptedReason)
		}
		if r == nil || r.Status != tc.resolved || r.Reason != string(tc.resolvedReason) {
			t.Errorf("%v: ResolvedRefs %+v, want %s %s", tc.ref, r, tc.resolved, tc.resolvedReason)
		}
	}
	if ps, ok := m.RouteParents[RouteRef{KindHTTPRoute, "shop", "north-south"}]; ok {
		t.Errorf("a route with only a Gateway parent has statuses %+v", ps)
	}

	// A ReferenceGrant in the backend's namespace resolves the bad route's
	// backend; its parent is still missing, so it is still not pushed.
	in := routeModelInputs()
	in.ReferenceGrants = []*gwv1.ReferenceGrant{{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "shop"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
	}}}
	m = Build(in)
	ps := m.RouteParents[RouteRef{KindHTTPRoute, "shop", "bad"}]
	if len(ps) != 1 || !meta.IsStatusConditionTrue(ps[0].Conditions, string(gwv1.RouteConditionResolvedRefs)) {
		t.Errorf("with a ReferenceGrant: %+v", ps)
	}
	if len(m.Routes) != 2 {
		t.Errorf("routes %v", m.Routes)
	}

	// Without the Gateway API: no routes, no statuses.
	if m := Build(Inputs{Namespaces: in.Namespaces, Services: in.Services}); m.Routes != nil || m.RouteParents != nil {
		t.Errorf("routes %v, parents %v without any route", m.Routes, m.RouteParents)
	}
}
