package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/controller/model"
)

// TestWaypointGateway runs the whole controller against a real apiserver
// with the Gateway API CRDs: its GatewayClass is created and accepted, a
// Gateway of that class becomes the waypoint's objects in its namespace,
// owned by it, and its status follows the Deployment (there is no
// kube-controller-manager here, so the test plays its part by writing the
// Deployment's status; garbage collection on delete is checked end to end).
func TestWaypointGateway(t *testing.T) {
	needEnv(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	// The CA's Secret goes there; this test may run first.
	createNamespace(t, cs, model.DefaultSystemNamespace, nil)
	kc := gatewayClient(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunConfig{Config: Config{Log: testLog(t)}, Rest: env.Config, GRPCListener: lis,
			MetricsAddr: "0", HealthAddr: "0", Registry: prometheus.NewRegistry(),
			Waypoint: gateway.Options{Image: "warren.local/waypoint:test"}})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return 20 s after cancel")
		}
	})

	eventually(t, "GatewayClass created and accepted", func() error {
		gc := &gwv1.GatewayClass{}
		if err := kc.Get(ctx, types.NamespacedName{Name: gateway.ClassName}, gc); err != nil {
			return err
		}
		if gc.Spec.ControllerName != gateway.ControllerName || !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") {
			return fmt.Errorf("class %+v", gc)
		}
		return nil
	})

	createNamespace(t, cs, "shop-wp", nil)
	gw := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "wp", Namespace: "shop-wp"},
		Spec: gwv1.GatewaySpec{GatewayClassName: gateway.ClassName,
			Listeners: []gwv1.Listener{{Name: "mesh", Port: gateway.HBONEPort, Protocol: gateway.HBONEProtocol}}},
	}
	if err := kc.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "shop-wp", Name: "wp"}
	dep := &appsv1.Deployment{}
	eventually(t, "waypoint objects created, owned by the Gateway", func() error {
		if err := kc.Get(ctx, key, gw); err != nil {
			return err
		}
		svc, sa, cm := &corev1.Service{}, &corev1.ServiceAccount{}, &corev1.ConfigMap{}
		if err := errors.Join(kc.Get(ctx, key, dep), kc.Get(ctx, key, svc), kc.Get(ctx, key, sa),
			kc.Get(ctx, types.NamespacedName{Namespace: "shop-wp", Name: gateway.RootsName(gw)}, cm)); err != nil {
			return err
		}
		for _, o := range []metav1.Object{dep, svc, sa, cm} {
			if refs := o.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != gw.UID {
				return fmt.Errorf("%s owners %+v", o.GetName(), refs)
			}
		}
		if cm.Data["root-cert.pem"] == "" {
			return errors.New("roots ConfigMap is empty")
		}
		if c := dep.Spec.Template.Spec.Containers[0]; c.Image != "warren.local/waypoint:test" {
			return fmt.Errorf("image %q", c.Image)
		}
		return nil
	})
	eventually(t, "Gateway accepted, addressed, not yet programmed", func() error {
		if err := kc.Get(ctx, key, gw); err != nil {
			return err
		}
		p := meta.FindStatusCondition(gw.Status.Conditions, "Programmed")
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Accepted") || p == nil || p.Status != metav1.ConditionFalse || len(gw.Status.Addresses) == 0 {
			return fmt.Errorf("status %+v", gw.Status)
		}
		return nil
	})

	// The waypoint pod becomes available: the Gateway is Programmed.
	dep.Status.Replicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 1, 1, 1
	if err := kc.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Gateway programmed", func() error {
		if err := kc.Get(ctx, key, gw); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") {
			return fmt.Errorf("status %+v", gw.Status.Conditions)
		}
		return nil
	})

	// A listener a waypoint cannot serve: not accepted, and says why.
	bad := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "wp-http", Namespace: "shop-wp"},
		Spec: gwv1.GatewaySpec{GatewayClassName: gateway.ClassName,
			Listeners: []gwv1.Listener{{Name: "web", Port: 80, Protocol: gwv1.HTTPProtocolType}}},
	}
	if err := kc.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Gateway with an HTTP listener refused", func() error {
		if err := kc.Get(ctx, client.ObjectKeyFromObject(bad), bad); err != nil {
			return err
		}
		a := meta.FindStatusCondition(bad.Status.Conditions, "Accepted")
		if a == nil || a.Status != metav1.ConditionFalse || a.Reason != "ListenersNotValid" {
			return fmt.Errorf("status %+v", bad.Status.Conditions)
		}
		return nil
	})
	if err := kc.Get(ctx, client.ObjectKeyFromObject(bad), &appsv1.Deployment{}); err == nil {
		t.Error("a Deployment was created for a Gateway that was not accepted")
	}
}
