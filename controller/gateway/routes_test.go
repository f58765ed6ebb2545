package gateway

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

func TestWaypointFor(t *testing.T) {
	for _, tc := range []struct {
		ns, svc map[string]string
		want    string
	}{
		{nil, nil, ""},
		{map[string]string{LabelUseWaypoint: "wp"}, nil, "wp"},
		{map[string]string{LabelUseWaypoint: "wp"}, map[string]string{LabelUseWaypoint: "other"}, "other"},
		{map[string]string{LabelUseWaypoint: "wp"}, map[string]string{LabelUseWaypoint: "none"}, ""},
		{nil, map[string]string{LabelUseWaypoint: "wp"}, "wp"},
		{map[string]string{LabelUseWaypoint: "none"}, nil, ""},
	} {
		if got := WaypointFor(tc.ns, tc.svc); got != tc.want {
			t.Errorf("WaypointFor(%v, %v) = %q, want %q", tc.ns, tc.svc, got, tc.want)
		}
	}
}

func routeInputs() RouteInputs {
	svc := func(ns, name string, labels map[string]string, ports ...int32) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "http", Port: p})
		}
		return s
	}
	in := RouteInputs{
		Namespaces: map[string]*corev1.Namespace{
			"shop":  {ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelUseWaypoint: "wp"}}},
			"other": {ObjectMeta: metav1.ObjectMeta{Name: "other"}},
		},
		Services: map[types.NamespacedName]*corev1.Service{},
	}
	for _, s := range []*corev1.Service{
		svc("shop", "web", nil, 80), svc("shop", "web-v1", nil, 8080), svc("shop", "web-v2", nil, 8080),
		svc("shop", "legacy", map[string]string{LabelUseWaypoint: "none"}, 80),
		svc("other", "db", nil, 5432), svc("other", "cache", nil, 6379),
	} {
		in.Services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	in.Grants = []*gwv1.ReferenceGrant{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "shop"}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service", Name: ptr.To(gwv1.ObjectName("db"))}},
		},
	}}
	return in
}

func svcParent(name string, port int32) gwv1.ParentReference {
	p := gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
	if port != 0 {
		p.Port = ptr.To(gwv1.PortNumber(port))
	}
	return p
}

func backend(ns, name string, port, weight int32) gwv1.HTTPBackendRef {
	b := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(name), Port: ptr.To(gwv1.PortNumber(port))}}}
	if ns != "" {
		b.Namespace = ptr.To(gwv1.Namespace(ns))
	}
	if weight >= 0 {
		b.Weight = ptr.To(weight)
	}
	return b
}

func httpRoute(parents []gwv1.ParentReference, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r", Generation: 4},
		Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func TestCompileHTTPRoute(t *testing.T) {
	in := routeInputs()
	canary := gwv1.HTTPRouteRule{
		Matches: []gwv1.HTTPRouteMatch{{
			Path:        &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To("/api")},
			Headers:     []gwv1.HTTPHeaderMatch{{Name: "x-canary", Value: "1"}},
			QueryParams: []gwv1.HTTPQueryParamMatch{{Type: ptr.To(gwv1.QueryParamMatchRegularExpression), Name: "v", Value: "[0-9]+"}},
			Method:      ptr.To(gwv1.HTTPMethodGet),
		}},
		Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier,
			RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "x-a", Value: "b"}}, Remove: []string{"x-c"}}}},
		BackendRefs: []gwv1.HTTPBackendRef{backend("", "web-v1", 8080, 90), backend("", "web-v2", 8080, 10)},
		Timeouts:    &gwv1.HTTPRouteTimeouts{Request: ptr.To(gwv1.Duration("2s")), BackendRequest: ptr.To(gwv1.Duration("500ms"))},
		Retry:       &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{503}, Attempts: ptr.To(3), Backoff: ptr.To(gwv1.Duration("10ms"))},
	}

	t.Run("accepted", func(t *testing.T) {
		res := CompileHTTPRoute(httpRoute([]gwv1.ParentReference{svcParent("web", 80)}, canary), in)
		if res.Route == nil || len(res.Parents) != 1 {
			t.Fatalf("result %+v", res)
		}
		mustCond(t, res.Parents[0], "Accepted", true, "Accepted")
		mustCond(t, res.Parents[0], "ResolvedRefs", true, "ResolvedRefs")
		r := res.Route
		if len(r.Parents) != 1 || r.Parents[0].Name != "web" || r.Parents[0].Port != 80 {
			t.Errorf("parents %+v", r.Parents)
		}
		rule := r.Rules[0]
		m := rule.Matches[0]
		if m.Path.Type != meshv1.MatchType_MATCH_TYPE_PATH_PREFIX || m.Path.Value != "/api" || m.Method != "GET" ||
			m.Headers[0].Type != meshv1.MatchType_MATCH_TYPE_EXACT || m.QueryParams[0].Type != meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION {
			t.Errorf("match %+v", m)
		}
		if len(rule.Backends) != 2 || rule.Backends[0].GetWeight() != 90 || rule.Backends[1].GetWeight() != 10 || rule.Backends[1].Namespace != "shop" {
			t.Errorf("backends %+v", rule.Backends)
		}
		if rule.Timeouts.RequestMs != 2000 || rule.Timeouts.BackendRequestMs != 500 {
			t.Errorf("timeouts %+v", rule.Timeouts)
		}
		if rule.Retry.Attempts != 3 || rule.Retry.Codes[0] != 503 || rule.Retry.BackoffMs != 10 {
			t.Errorf("retry %+v", rule.Retry)
		}
		if hm := rule.Filters[0].GetRequestHeaderModifier(); hm == nil || hm.Set[0].Name != "x-a" || hm.Remove[0] != "x-c" {
			t.Errorf("filters %+v", rule.Filters)
		}
	})

	for _, tc := range []struct {
		name             string
		route            *gwv1.HTTPRoute
		served           bool
		accepted         bool
		acceptReason     string
		resolved         bool
		resolveReason    string
		wantParentStatus int
	}{
		{"parent Service missing", httpRoute([]gwv1.ParentReference{svcParent("nope", 0)}, canary), false, false, "NoMatchingParent", true, "ResolvedRefs", 1},
		{"parent port missing", httpRoute([]gwv1.ParentReference{svcParent("web", 81)}, canary), false, false, "NoMatchingParent", true, "ResolvedRefs", 1},
		{"parent not bound to a waypoint", httpRoute([]gwv1.ParentReference{svcParent("legacy", 0)}, canary), false, false, "NoMatchingParent", true, "ResolvedRefs", 1},
		{"a Gateway parent is not ours", httpRoute([]gwv1.ParentReference{{Name: "gw"}}, canary), false, false, "", false, "", 0},
		{"backend missing: accepted, unresolved", httpRoute([]gwv1.ParentReference{svcParent("web", 0)},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backend("", "gone", 80, -1)}}), true, true, "Accepted", false, "BackendNotFound", 1},
		{"cross-namespace backend with a grant", httpRoute([]gwv1.ParentReference{svcParent("web", 0)},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backend("other", "db", 5432, -1)}}), true, true, "Accepted", true, "ResolvedRefs", 1},
		{"cross-namespace backend without a grant", httpRoute([]gwv1.ParentReference{svcParent("web", 0)},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backend("other", "cache", 6379, -1)}}), true, true, "Accepted", false, "RefNotPermitted", 1},
		{"bad regex", httpRoute([]gwv1.ParentReference{svcParent("web", 0)}, gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{
			Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchRegularExpression), Value: ptr.To("/(a")}}}}), false, false, "UnsupportedValue", true, "ResolvedRefs", 1},
		{"unsupported filter", httpRoute([]gwv1.ParentReference{svcParent("web", 0)}, gwv1.HTTPRouteRule{Filters: []gwv1.HTTPRouteFilter{{
			Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Name: "x"}}}}), false, false, "UnsupportedValue", true, "ResolvedRefs", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := CompileHTTPRoute(tc.route, in)
			if (res.Route != nil) != tc.served {
				t.Errorf("served %v, want %v", res.Route != nil, tc.served)
			}
			if len(res.Parents) != tc.wantParentStatus {
				t.Fatalf("parent statuses %+v, want %d", res.Parents, tc.wantParentStatus)
			}
			if tc.wantParentStatus == 0 {
				return
			}
			mustCond(t, res.Parents[0], "Accepted", tc.accepted, tc.acceptReason)
			mustCond(t, res.Parents[0], "ResolvedRefs", tc.resolved, tc.resolveReason)
			if res.Parents[0].ControllerName != ControllerName {
				t.Errorf("controller name %q", res.Parents[0].ControllerName)
			}
		})
	}
}

func TestCompileGRPCRoute(t *testing.T) {
	in := routeInputs()
	r := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "g"},
		Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{svcParent("web", 0)}},
			Rules: []gwv1.GRPCRouteRule{{
				Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr.To("grpc.testing.TestService"), Method: ptr.To("UnaryCall")},
					Headers: []gwv1.GRPCHeaderMatch{{Name: "x-v", Value: "2"}}}},
				BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web-v2", Port: ptr.To(gwv1.PortNumber(8080))}}}},
			}}},
	}
	res := CompileGRPCRoute(r, in)
	if res.Route == nil || res.Route.Kind != meshv1.RouteKind_ROUTE_KIND_GRPC {
		t.Fatalf("result %+v", res)
	}
	g := res.Route.Rules[0].Matches[0].Grpc
	if g.Type != meshv1.MatchType_MATCH_TYPE_EXACT || g.Service != "grpc.testing.TestService" || g.Method != "UnaryCall" {
		t.Errorf("gRPC match %+v", g)
	}
	mustCond(t, res.Parents[0], "Accepted", true, "Accepted")
}

func mustCond(t *testing.T, ps gwv1.RouteParentStatus, typ string, status bool, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(ps.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, ps.Conditions)
	}
	if (c.Status == metav1.ConditionTrue) != status || c.Reason != reason {
		t.Errorf("%s = %s/%s (%s), want %v/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	if strings.Contains(c.Message, "%!") {
		t.Errorf("%s message badly formatted: %s", typ, c.Message)
	}
}
