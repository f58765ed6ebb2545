package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/controller/model"
)

// writeRouteStatus sets, in status.parents of every HTTPRoute and
// GRPCRoute, the entries of gateway.ControllerName to the model's; other
// controllers' entries are kept as they are. A route is written only when
// that changes anything, and a condition keeps its lastTransitionTime while
// its status stays, so a quiet cluster costs no write and no write loop.
func (c *Controller) writeRouteStatus(ctx context.Context, m *model.Model, in model.Inputs) error {
	var errs []error
	for _, r := range in.HTTPRoutes {
		errs = append(errs, c.routeStatus(ctx, m, model.KindHTTPRoute, r, r.Status.Parents))
	}
	for _, r := range in.GRPCRoutes {
		errs = append(errs, c.routeStatus(ctx, m, model.KindGRPCRoute, r, r.Status.Parents))
	}
	return errors.Join(errs...)
}

// routeStatus writes the status.parents of route (a cached
// *gwv1.HTTPRoute or *gwv1.GRPCRoute whose status.parents are cur) if the
// model's differ.
func (c *Controller) routeStatus(ctx context.Context, m *model.Model, kind string, route client.Object, cur []gwv1.RouteParentStatus) error {
	want := m.RouteParents[model.RouteRef{Kind: kind, Namespace: route.GetNamespace(), Name: route.GetName()}]
	parents, changed := routeParents(cur, want)
	if !changed {
		return nil
	}
	obj := route.DeepCopyObject().(client.Object) // the cache's is shared
	switch o := obj.(type) {
	case *gwv1.HTTPRoute:
		o.Status.Parents = parents
	case *gwv1.GRPCRoute:
		o.Status.Parents = parents
	default:
		return fmt.Errorf("status of %T: not a route", obj)
	}
	// Update, as for policies: a stale cached route fails with a conflict.
	if err := c.client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("status of route %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	c.cfg.Log.Info("route status written", "kind", kind, "namespace", obj.GetNamespace(), "name", obj.GetName())
	return nil
}

// routeParents returns cur with the entries of gateway.ControllerName
// replaced by want (in place, so that an unchanged status compares equal;
// new parents at the end), and whether that differs from cur. A condition
// of ours whose status is unchanged keeps its lastTransitionTime.
func routeParents(cur, want []gwv1.RouteParentStatus) ([]gwv1.RouteParentStatus, bool) {
	used := make([]bool, len(want))
	merge := func(old []metav1.Condition, w gwv1.RouteParentStatus) gwv1.RouteParentStatus {
		var conds []metav1.Condition
		for _, wc := range w.Conditions {
			if o := meta.FindStatusCondition(old, wc.Type); o != nil {
				conds = append(conds, *o)
			}
		}
		// SetStatusCondition keeps lastTransitionTime when the status is
		// the same, and stamps now when it changes or is new.
		for _, wc := range w.Conditions {
			wc.Message = truncate(wc.Message, 1024)
			meta.SetStatusCondition(&conds, wc)
		}
		w.Conditions = conds
		return w
	}
	var out []gwv1.RouteParentStatus
	for _, p := range cur {
		if p.ControllerName != gateway.ControllerName {
			out = append(out, p)
			continue
		}
		for i, w := range want {
			if !used[i] && equality.Semantic.DeepEqual(p.ParentRef, w.ParentRef) {
				used[i] = true
				out = append(out, merge(p.Conditions, w))
				break
			}
		}
	}
	for i, w := range want {
		if !used[i] {
			out = append(out, merge(nil, w))
		}
	}
	// Semantic: a nil list equals an empty one.
	return out, !equality.Semantic.DeepEqual(out, cur)
}
