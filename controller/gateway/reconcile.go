package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ManagedBy labels every object the waypoint controller writes; the
// manager's cache may watch only objects with it (see CacheSelector).
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "warren-controller"
)

// RootsSource says where the mesh roots are: a ConfigMap in the system
// namespace, read with a direct (uncached) reader.
type RootsSource struct {
	Namespace, Name, Key string
}

// Setup registers the waypoint controllers with mgr: its GatewayClass is
// created if missing and accepted, and every Gateway of that class is run
// as a waypoint. Only the leader writes.
func Setup(mgr manager.Manager, o Options, roots RootsSource, log *slog.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	r := &reconciler{client: mgr.GetClient(), reader: mgr.GetAPIReader(), opts: o, roots: roots, log: log}
	if err := mgr.Add(manager.RunnableFunc(r.ensureClass)); err != nil {
		return err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("gatewayclass").
		For(&gwv1.GatewayClass{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.(*gwv1.GatewayClass).Spec.ControllerName == ControllerName
		}))).
		Complete(reconcile.Func(r.reconcileClass)); err != nil {
		return fmt.Errorf("gatewayclass controller: %w", err)
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("waypoint").
		For(&gwv1.Gateway{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return string(o.(*gwv1.Gateway).Spec.GatewayClassName) == ClassName
		}))).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Complete(reconcile.Func(r.reconcileGateway)); err != nil {
		return fmt.Errorf("waypoint controller: %w", err)
	}
	return nil
}

type reconciler struct {
	client client.Client
	reader client.Reader
	opts   Options
	roots  RootsSource
	log    *slog.Logger
}

// ensureClass creates the warren-waypoint GatewayClass when it is missing,
// as Istio does for its classes: an operator only writes Gateways. It runs
// on the leader only (the default for a runnable).
func (r *reconciler) ensureClass(ctx context.Context) error {
	gc := &gwv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: ClassName, Labels: map[string]string{LabelManagedBy: ManagedBy}},
		Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName,
			// At most 64 bytes (the CRD refuses more).
			Description: ptrTo("Warren waypoints: L7 proxies of the mesh")},
	}
	err := r.client.Create(ctx, gc)
	switch {
	case err == nil:
		r.log.Info("created GatewayClass", "name", ClassName)
	case apierrors.IsAlreadyExists(err):
	default:
		// Not fatal: the operator may create it; say why we could not.
		r.log.Error("create GatewayClass", "name", ClassName, "err", err)
	}
	<-ctx.Done()
	return nil
}

func (r *reconciler) reconcileClass(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	gc := &gwv1.GatewayClass{}
	if err := r.client.Get(ctx, req.NamespacedName, gc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	st := ClassStatus(gc, metav1.Now())
	if equalConditions(st.Conditions, gc.Status.Conditions) {
		return reconcile.Result{}, nil
	}
	gc.Status = st
	return reconcile.Result{}, r.client.Status().Update(ctx, gc)
}

func (r *reconciler) reconcileGateway(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	gw := &gwv1.Gateway{}
	if err := r.client.Get(ctx, req.NamespacedName, gw); err != nil {
		// Deleted: the owner references let the garbage collector remove
		// what it ran as.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !gw.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	var obs Observed
	st := GatewayStatus(gw, obs, metav1.Now())
	if isTrue(st.Conditions, gwv1.GatewayConditionAccepted) {
		obs.ApplyError = r.apply(ctx, gw)
		if obs.ApplyError != nil {
			r.log.Error("apply waypoint", "gateway", req.String(), "err", obs.ApplyError)
		}
		obs.Deployment, obs.Service = &appsv1.Deployment{}, &corev1.Service{}
		key := types.NamespacedName{Namespace: gw.Namespace, Name: Name(gw)}
		if err := r.client.Get(ctx, key, obs.Deployment); err != nil {
			obs.Deployment = nil
		}
		if err := r.client.Get(ctx, key, obs.Service); err != nil {
			obs.Service = nil
		}
		st = GatewayStatus(gw, obs, metav1.Now())
	}
	if !reflect.DeepEqual(stripTimes(st), stripTimes(gw.Status)) {
		gw.Status = st
		if err := r.client.Status().Update(ctx, gw); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, obs.ApplyError
}

// apply creates or updates the waypoint's objects.
func (r *reconciler) apply(ctx context.Context, gw *gwv1.Gateway) error {
	cm := &corev1.ConfigMap{}
	if err := r.reader.Get(ctx, types.NamespacedName{Namespace: r.roots.Namespace, Name: r.roots.Name}, cm); err != nil {
		return fmt.Errorf("mesh roots: %w", err)
	}
	roots := cm.Data[r.roots.Key]
	if roots == "" {
		return fmt.Errorf("mesh roots: ConfigMap %s/%s has no %s", r.roots.Namespace, r.roots.Name, r.roots.Key)
	}
	want := Render(gw, roots, r.opts)
	var errs []error
	upsert := func(obj client.Object, mutate func()) {
		_, err := controllerutil.CreateOrUpdate(ctx, r.client, obj, func() error {
			mutate()
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%T %s: %w", obj, obj.GetName(), err))
		}
	}
	own := func(cur, w metav1.Object) {
		cur.SetLabels(merge(cur.GetLabels(), w.GetLabels()))
		cur.SetOwnerReferences(w.GetOwnerReferences())
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: want.ServiceAccount.Name}}
	upsert(sa, func() { own(sa, want.ServiceAccount) })
	cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: want.Roots.Name}}
	upsert(cm, func() { own(cm, want.Roots); cm.Data = want.Roots.Data })
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: want.Deployment.Name}}
	upsert(dep, func() {
		own(dep, want.Deployment)
		replicas := dep.Spec.Replicas // an operator's or an autoscaler's scale stays
		dep.Spec = want.Deployment.Spec
		if replicas != nil {
			dep.Spec.Replicas = replicas
		}
	})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: want.Service.Name}}
	upsert(svc, func() {
		own(svc, want.Service)
		svc.Spec.Selector = want.Service.Spec.Selector
		svc.Spec.Ports = want.Service.Spec.Ports
	})
	return errors.Join(errs...)
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func isTrue(conds []metav1.Condition, t gwv1.GatewayConditionType) bool {
	for _, c := range conds {
		if c.Type == string(t) {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// stripTimes drops transition times, so that an unchanged status is not
// written again.
func stripTimes(st gwv1.GatewayStatus) gwv1.GatewayStatus {
	st = *st.DeepCopy()
	for i := range st.Conditions {
		st.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	for i := range st.Listeners {
		for j := range st.Listeners[i].Conditions {
			st.Listeners[i].Conditions[j].LastTransitionTime = metav1.Time{}
		}
	}
	return st
}

func equalConditions(a, b []metav1.Condition) bool {
	strip := func(cs []metav1.Condition) []metav1.Condition {
		out := make([]metav1.Condition, len(cs))
		for i, c := range cs {
			c.LastTransitionTime = metav1.Time{}
			out[i] = c
		}
		return out
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

func ptrTo[T any](v T) *T { return &v }
