package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/gateway"
)

// TestRouteParents: ours are replaced, others' kept, an unchanged status
// costs no write and keeps its transition time, a flip stamps a new one.
func TestRouteParents(t *testing.T) {
	then := metav1.NewTime(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	svc := gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: "web"}
	cond := func(typ string, s metav1.ConditionStatus, reason string, at metav1.Time) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: "m", ObservedGeneration: 1, LastTransitionTime: at}
	}
	ours := func(at metav1.Time, resolved metav1.ConditionStatus) gwv1.RouteParentStatus {
		return gwv1.RouteParentStatus{ParentRef: svc, ControllerName: gateway.ControllerName, Conditions: []metav1.Condition{
			cond("Accepted", metav1.ConditionTrue, "Accepted", at), cond("ResolvedRefs", resolved, "x", at)}}
	}
	other := gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "ingress"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", then)}}

	cur := []gwv1.RouteParentStatus{ours(then, metav1.ConditionTrue), other}
	if out, changed := routeParents(cur, []gwv1.RouteParentStatus{ours(metav1.Time{}, metav1.ConditionTrue)}); changed {
		t.Errorf("unchanged status written: %+v", out)
	}
	out, changed := routeParents(cur, []gwv1.RouteParentStatus{ours(metav1.Time{}, metav1.ConditionFalse)})
	if !changed || len(out) != 2 || out[1].ControllerName != "example.com/other" {
		t.Fatalf("changed %v, parents %+v", changed, out)
	}
	if a, r := out[0].Conditions[0], out[0].Conditions[1]; !a.LastTransitionTime.Equal(&then) || r.LastTransitionTime.Equal(&then) || r.Status != metav1.ConditionFalse {
		t.Errorf("conditions %+v: Accepted keeps its time, ResolvedRefs gets a new one", out[0].Conditions)
	}
	if out, changed := routeParents(cur, nil); !changed || len(out) != 1 || out[0].ControllerName != "example.com/other" {
		t.Errorf("parent gone: changed %v, %+v", changed, out)
	}
	if _, changed := routeParents([]gwv1.RouteParentStatus{other}, nil); changed {
		t.Error("a route with only others' parents written")
	}
	if _, changed := routeParents(nil, nil); changed {
		t.Error("a route without any parent written")
	}
}
