package controller

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/controller/model"
)

// TestRoutes runs the controller with the Gateway API kinds against the
// real apiserver: Services of a namespace labelled for a waypoint are bound
// to it in the model, accepted routes are compiled into the model (what
// distribution pushes), a route with a missing parent and a backend in
// another namespace is refused with the reasons in its status, and a
// ReferenceGrant then resolves its backend.
func TestRoutes(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	s := scheme(t)
	if err := gwv1.Install(s); err != nil {
		t.Fatal(err)
	}
	c, kc := startControllerWith(t, s)
	if !c.gatewayAPI {
		t.Fatal("the Gateway API CRDs are installed, yet the controller does not watch routes")
	}

	createNamespace(t, cs, "rt", map[string]string{gateway.LabelUseWaypoint: "wp"})
	createNamespace(t, cs, "rt-db", nil)
	svc := func(ns, name string, port int32, appProtocol *string) {
		t.Helper()
		o := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "p", Port: port, AppProtocol: appProtocol}}}}
		if err := kc.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	svc("rt", "web", 80, ptr.To("http"))
	svc("rt", "web-v1", 8080, nil)
	svc("rt", "web-v2", 8080, nil)
	svc("rt", "api", 9090, ptr.To("kubernetes.io/h2c"))
	svc("rt-db", "db", 5432, nil)

	parent := func(name string) []gwv1.ParentReference {
		return []gwv1.ParentReference{{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}}
	}
	backend := func(ns, name string, port, weight int32) gwv1.HTTPBackendRef {
		b := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
			Name: gwv1.ObjectName(name), Port: ptr.To(gwv1.PortNumber(port))}, Weight: ptr.To(weight)}}
		if ns != "" {
			b.Namespace = ptr.To(gwv1.Namespace(ns))
		}
		return b
	}
	split := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "rt", Name: "split"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent("web")},
		Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backend("", "web-v1", 8080, 90), backend("", "web-v2", 8080, 10)}}},
	}}
	bad := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "rt", Name: "bad"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent("missing")},
		Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backend("rt-db", "db", 5432, 1)}}},
	}}
	api := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "rt", Name: "api"}, Spec: gwv1.GRPCRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent("api")},
		Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{
			BackendObjectReference: gwv1.BackendObjectReference{Name: "api", Port: ptr.To(gwv1.PortNumber(9090))}}}}}},
	}}
	for _, o := range []client.Object{split, bad, api} {
		if err := kc.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	// want checks our one parent entry of a route's status.
	want := func(parents []gwv1.RouteParentStatus, accepted, acceptedReason, resolved, resolvedReason string) error {
		var ours []gwv1.RouteParentStatus
		for _, p := range parents {
			if p.ControllerName == gateway.ControllerName {
				ours = append(ours, p)
			}
		}
		if len(ours) != 1 {
			return fmt.Errorf("parents %+v", parents)
		}
		a := meta.FindStatusCondition(ours[0].Conditions, string(gwv1.RouteConditionAccepted))
		r := meta.FindStatusCondition(ours[0].Conditions, string(gwv1.RouteConditionResolvedRefs))
		if a == nil || string(a.Status) != accepted || a.Reason != acceptedReason || r == nil || string(r.Status) != resolved || r.Reason != resolvedReason {
			return fmt.Errorf("conditions %+v", ours[0].Conditions)
		}
		return nil
	}
	httpStatus := func(r *gwv1.HTTPRoute, accepted, acceptedReason, resolved, resolvedReason string) func() error {
		return func() error {
			if err := kc.Get(ctx, client.ObjectKeyFromObject(r), r); err != nil {
				return err
			}
			return want(r.Status.Parents, accepted, acceptedReason, resolved, resolvedReason)
		}
	}
	eventually(t, "split route accepted", httpStatus(split, "True", "Accepted", "True", "ResolvedRefs"))
	eventually(t, "bad route refused", httpStatus(bad, "False", "NoMatchingParent", "False", "RefNotPermitted"))
	eventually(t, "GRPCRoute accepted", func() error {
		if err := kc.Get(ctx, client.ObjectKeyFromObject(api), api); err != nil {
			return err
		}
		return want(api.Status.Parents, "True", "Accepted", "True", "ResolvedRefs")
	})

	// The model, which distribution converts for every subscriber.
	eventually(t, "model binds the Services and holds the accepted routes", func() error {
		m := c.Model()
		web, apiSvc := m.Services[model.Key{Namespace: "rt", Name: "web"}], m.Services[model.Key{Namespace: "rt", Name: "api"}]
		if web == nil || apiSvc == nil || web.Waypoint != "rt/wp" || apiSvc.Waypoint != "rt/wp" {
			return fmt.Errorf("services web %+v, api %+v", web, apiSvc)
		}
		if db := m.Services[model.Key{Namespace: "rt-db", Name: "db"}]; db == nil || db.Waypoint != "" {
			return fmt.Errorf("db %+v: its namespace is not labelled", db)
		}
		if len(apiSvc.Ports) != 1 || apiSvc.Ports[0].AppProtocol != "kubernetes.io/h2c" {
			return fmt.Errorf("api ports %+v", apiSvc.Ports)
		}
		var refs []model.RouteRef
		for _, r := range m.Routes {
			if r.Namespace == "rt" {
				refs = append(refs, r.RouteRef)
			}
		}
		wantRefs := []model.RouteRef{{Kind: model.KindGRPCRoute, Namespace: "rt", Name: "api"}, {Kind: model.KindHTTPRoute, Namespace: "rt", Name: "split"}}
		if !slices.Equal(refs, wantRefs) {
			return fmt.Errorf("routes %v, want %v", refs, wantRefs)
		}
		for _, r := range m.Routes {
			if r.Name == "split" {
				if bs := r.Proto.Rules[0].Backends; len(bs) != 2 || bs[0].GetWeight() != 90 || bs[1].GetWeight() != 10 {
					return fmt.Errorf("split backends %v", bs)
				}
			}
		}
		return nil
	})

	// A ReferenceGrant in the backend's namespace: the bad route's backend
	// resolves; its parent is still missing.
	grant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "rt-db", Name: "from-rt"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "rt"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
	}}
	if err := kc.Create(ctx, grant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ReferenceGrant resolves the bad route's backend", httpStatus(bad, "False", "NoMatchingParent", "True", "ResolvedRefs"))
}
